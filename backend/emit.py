"""Emit a schedule from placed df IR, with the cost model's estimate of every kernel."""

from __future__ import annotations

import math
from dataclasses import replace

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from coec.backend.cost import pmus_for
from coec.backend.plan import b_axis, inplace_results, kernel_layout, read_plan
from coec.backend.plan_cost import estimate
from coec.backend.schedule import (
    FORMAT,
    Buffer,
    Dma,
    Kernel,
    KernelEstimate,
    Op,
    Options,
    Phase,
    Schedule,
    TargetSection,
    Value,
    summarize,
)
from coec.backend.target import Target
from coec.ir import ops as df
from coec.ir.types import TensorType


class _Namer:
    """Stable unique names for values, from their name hints."""

    def __init__(self) -> None:
        self.names: dict[SSAValue, str] = {}
        self.taken: set[str] = set()

    def __call__(self, v: SSAValue, preferred: str | None = None) -> str:
        if v in self.names:
            return self.names[v]
        base = preferred or v.name_hint or "t"
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        self.names[v] = name
        return name


def _type(v: SSAValue) -> TensorType:
    return df.tensor_type(v)


def _value(t: TensorType) -> Value:
    return Value(t.shape_tuple, t.dtype)


def json_number(x):
    """``x`` as strict JSON: non-finite floats (a ``-inf`` attention mask) become the strings
    ``"inf"``, ``"-inf"``, ``"nan"``, which ``float()`` and NumPy read back."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, list):
        return [json_number(v) for v in x]
    return x


def _op_attrs(op: df.DfOp) -> dict:
    attrs = {k: json_number(v) for k, v in op.props().items()}
    if isinstance(op, df.LayerNormOp):
        attrs["has_weight"], attrs["has_bias"] = op.weight is not None, op.bias is not None
    return attrs


def _dma(value: str, buffer: str, src: str, dst: str, t: TensorType, **extra) -> Dma:
    box = tuple((0, d) for d in t.shape_tuple)
    return Dma(value, buffer, src, dst, box, t.nbytes, **extra)


def emit_schedule(module: ModuleOp, target: Target, options: dict) -> Schedule:
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    block = fn.body.block
    name = _Namer()
    buffers: dict[str, Buffer] = {}
    kernels: list[Kernel] = []

    def add_buffer(
        v: SSAValue, kind: str, offset: int, preferred: str | None = None, **extra
    ) -> None:
        t = _type(v)
        live = (-1, -1)
        buffers[name(v, preferred)] = Buffer(
            t.shape_tuple, t.dtype, t.nbytes, t.tier_name, offset, kind, live, **extra
        )

    for op in block.ops:  # weights keep their state-dict names: claim them first
        if isinstance(op, df.WeightOp):
            name(op.result, op.sym_name.data)
    arg_offsets = fn.attributes["arg_offsets"].get_values()
    for arg, off in zip(block.args, arg_offsets, strict=True):
        add_buffer(arg, "input", off)
    for op in block.ops:
        if isinstance(op, df.WeightOp):
            add_buffer(
                op.result, "weight", op.attributes["offset"].get_values()[0], op.sym_name.data
            )
        elif isinstance(op, df.ReshapeOp):
            base = buffers[name(op.input)]
            root = base.alias_of or name(op.input)
            add_buffer(op.result, base.kind, base.offset, alias_of=root)
        elif isinstance(op, df.KernelOp):
            index = len(kernels)
            inplace = inplace_results(op)
            offsets = op.attributes["offsets"].get_values()
            for i, (r, off) in enumerate(zip(op.outputs, offsets, strict=True)):
                if i in inplace:  # updated where its input lives: a view of that buffer
                    base = buffers[name(op.inputs[inplace[i]])]
                    root = base.alias_of or name(op.inputs[inplace[i]])
                    add_buffer(r, base.kind, base.offset, alias_of=root)
                    continue
                add_buffer(r, "activation", off)
                buffers[name(r)] = replace(buffers[name(r)], live=(index, index))
            kernels.append(_kernel(op, name, buffers, target))
    outputs = [name(v) for v in block.last_op.operands]

    buffers = _liveness(buffers, kernels, outputs)
    draft = Schedule(
        format=FORMAT,
        target=TargetSection.of(target),
        options=Options(**options),
        inputs=tuple(name(a) for a in block.args),
        outputs=tuple(outputs),
        buffers=buffers,
        kernels=tuple(kernels),
        estimate=None,  # summarize reads everything but the estimate
    )
    return replace(draft, estimate=summarize(draft))


def _kernel(op: df.KernelOp, name: _Namer, buffers: dict, target: Target) -> Kernel:
    plan = read_plan(op)
    lay = kernel_layout(op, plan)
    for outer, arg in zip(op.inputs, op.block.args, strict=True):
        name.names[arg] = name(outer)  # the SRAM copy goes by its buffer's name

    def tier_of(v: SSAValue) -> str:
        return buffers[name(v)].tier

    values: dict[str, Value] = {name(a): _value(_type(a)) for a in op.block.args}
    constants = {}
    for inner in op.compute_ops():
        if isinstance(inner, df.ConstantOp):
            constants[name(inner.result)] = json_number(inner.props()["value"])
    ops = []
    for inner in plan.ops:
        s = plan.streams[inner]
        out = name(inner.results[0])
        values[out] = _value(_type(inner.results[0]))
        b_stream = gather_from = update_in = None
        if inner in lay.b_streams:
            arg = lay.b_streams[inner]
            ntiles = plan.ntiles(s.phase)
            b_stream = _dma(
                name(arg),
                name(arg),
                tier_of(arg),
                "sram",
                _type(arg),
                phase=s.phase,
                axis=b_axis(inner),
                chunk=plan.b_tiles[inner],
            )
            b_stream = replace(b_stream, bytes=b_stream.bytes * ntiles)
        if inner in lay.gathers:  # rows read straight from the table's tier
            table = lay.gathers[inner]
            gather_from = _dma(
                name(table),
                name(table),
                tier_of(table),
                "sram",
                _type(table),
                phase=s.phase,
                axis=None,
            )
            gather_from = replace(gather_from, bytes=_type(inner.results[0]).nbytes)
        if inner in lay.updates:  # written where the dest lives: it moves nothing itself
            dest = lay.updates[inner]
            update_in = _dma(name(dest), name(dest), tier_of(dest), "sram", _type(dest))
            update_in = replace(update_in, bytes=0)
        ops.append(
            Op(
                op=inner.name.removeprefix("df."),
                inputs=tuple(name(v) for v in inner.operands),
                output=out,
                attrs=_op_attrs(inner),
                phase=s.phase,
                axes=tuple(s.in_axes),
                axis=s.out_axis,
                b_stream=b_stream,
                gather_from=gather_from,
                update_in=update_in,
            )
        )
    loads = [
        _dma(
            name(ld.value),
            name(ld.value),
            tier_of(ld.value),
            "sram",
            _type(ld.value),
            phase=ld.phase,
            axis=ld.axis,
        )
        for ld in lay.loads
    ]
    stores = [
        _store(
            _dma(
                name(st.value),
                name(st.result),
                "sram",
                tier_of(st.result),
                _type(st.result),
                phase=st.phase,
                axis=st.axis,
            ),
            st,
        )
        for st in lay.stores
    ]
    cost, pairs, flops = estimate(plan, lay, target, tier_of)
    return Kernel(
        name=op.sym_name.data,
        ops=tuple(ops),
        constants=constants,
        values=values,
        whole=tuple(name(v) for v in lay.whole),
        phases=tuple(Phase(e, plan.tile(p)) for p, e in enumerate(plan.extents)),
        loads=tuple(loads),
        stores=tuple(stores),
        sram_bytes=lay.sram_bytes,
        pmus=pmus_for(lay.sram_bytes, target.memory["sram"].capacity_bytes, target.compute.pmus),
        estimate=KernelEstimate.of(flops, pairs, cost),
    )


def _store(dma: Dma, st) -> Dma:
    """A store's DMA; an update written in place stores only its region's rows."""
    if st.region is None:
        return dma
    axis, start, stop = st.region
    box = tuple((start, stop) if i == axis else r for i, r in enumerate(dma.box))
    return replace(dma, box=box, bytes=st.nbytes)


def _liveness(
    buffers: dict[str, Buffer], kernels: list[Kernel], outputs: list[str]
) -> dict[str, Buffer]:
    """live = [defining kernel, last kernel reading it]; outputs live to the end."""
    live = {b: list(buf.live) for b, buf in buffers.items()}

    def root(b: str) -> str:
        return buffers[b].alias_of or b

    for i, k in enumerate(kernels):
        streams = [
            d for op in k.ops for d in (op.b_stream, op.gather_from, op.update_in) if d is not None
        ]
        for dma in list(k.loads) + list(k.stores) + streams:
            for b in {dma.buffer, root(dma.buffer)}:
                live[b][1] = max(live[b][1], i)
    end = len(kernels)
    for b in outputs:
        live[b][1] = end
        live[root(b)][1] = end
    return {
        b: replace(buf, live=tuple(live[b]) if buf.kind == "activation" else (-1, end))
        for b, buf in buffers.items()
    }
