"""Emit a schedule from placed df IR, with the cost model's estimate of every kernel."""

from __future__ import annotations

import math
from collections import defaultdict

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from coec.backend.cost import pmus_for
from coec.backend.plan import b_axis, kernel_layout, read_plan
from coec.backend.plan_cost import estimate
from coec.backend.schedule import FORMAT
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


def _value_json(t: TensorType) -> dict:
    return {"shape": list(t.shape_tuple), "dtype": t.dtype}


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


def _dma(value: str, buffer: str, src: str, dst: str, t: TensorType, **extra) -> dict:
    return {
        "value": value,
        "buffer": buffer,
        "src": src,
        "dst": dst,
        "box": [[0, d] for d in t.shape_tuple],
        "bytes": t.nbytes,
        **extra,
    }


def emit_schedule(module: ModuleOp, target: Target, options: dict) -> dict:
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    block = fn.body.block
    name = _Namer()
    buffers: dict[str, dict] = {}
    kernels: list[dict] = []

    def add_buffer(v: SSAValue, kind: str, offset: int, preferred: str | None = None) -> None:
        t = _type(v)
        buffers[name(v, preferred)] = {
            **_value_json(t),
            "bytes": t.nbytes,
            "tier": t.tier_name,
            "offset": offset,
            "kind": kind,
            "live": [-1, -1],
        }

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
            root = base.get("alias_of", name(op.input))
            add_buffer(op.result, base["kind"], base["offset"])
            buffers[name(op.result)]["alias_of"] = root
        elif isinstance(op, df.KernelOp):
            index = len(kernels)
            for r, off in zip(op.outputs, op.attributes["offsets"].get_values(), strict=True):
                add_buffer(r, "activation", off)
                buffers[name(r)]["live"] = [index, index]
            kernels.append(_kernel(op, name, buffers, target))
    outputs = [name(v) for v in block.last_op.operands]

    _liveness(buffers, kernels, outputs)
    schedule = {
        "format": FORMAT,
        "target": target.to_json(),
        "options": dict(options),
        "inputs": [name(a) for a in block.args],
        "outputs": outputs,
        "buffers": buffers,
        "kernels": kernels,
    }
    schedule["estimate"] = summarize(schedule)
    return schedule


def _kernel(op: df.KernelOp, name: _Namer, buffers: dict, target: Target) -> dict:
    plan = read_plan(op)
    lay = kernel_layout(op, plan)
    for outer, arg in zip(op.inputs, op.block.args, strict=True):
        name.names[arg] = name(outer)  # the SRAM copy goes by its buffer's name

    def tier_of(v: SSAValue) -> str:
        return buffers[name(v)]["tier"]

    values: dict[str, dict] = {name(a): _value_json(_type(a)) for a in op.block.args}
    constants = {}
    for inner in op.compute_ops():
        if isinstance(inner, df.ConstantOp):
            constants[name(inner.result)] = json_number(inner.props()["value"])
    ops = []
    for inner in plan.ops:
        s = plan.streams[inner]
        out = name(inner.results[0])
        values[out] = _value_json(_type(inner.results[0]))
        record = {
            "op": inner.name.removeprefix("df."),
            "inputs": [name(v) for v in inner.operands],
            "output": out,
            "attrs": _op_attrs(inner),
            "phase": s.phase,
            "axes": s.in_axes,
            "axis": s.out_axis,
        }
        if inner in lay.b_streams:
            arg = lay.b_streams[inner]
            ntiles = plan.ntiles(s.phase)
            record["b_stream"] = _dma(
                name(arg),
                name(arg),
                tier_of(arg),
                "sram",
                _type(arg),
                phase=s.phase,
                axis=b_axis(inner),
                chunk=plan.b_tiles[inner],
            )
            record["b_stream"]["bytes"] *= ntiles
        if inner in lay.gathers:  # rows read straight from the table's tier
            table = lay.gathers[inner]
            record["gather_from"] = _dma(
                name(table),
                name(table),
                tier_of(table),
                "sram",
                _type(table),
                phase=s.phase,
                axis=None,
            )
            record["gather_from"]["bytes"] = _type(inner.results[0]).nbytes
        ops.append(record)
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
        _dma(
            name(st.value),
            name(st.result),
            "sram",
            tier_of(st.result),
            _type(st.result),
            phase=st.phase,
            axis=st.axis,
        )
        for st in lay.stores
    ]
    cost, pairs, flops = estimate(plan, lay, target, tier_of)
    return {
        "name": op.sym_name.data,
        "ops": ops,
        "constants": constants,
        "values": values,
        "whole": [name(v) for v in lay.whole],
        "phases": [{"extent": e, "tile": plan.tile(p)} for p, e in enumerate(plan.extents)],
        "loads": loads,
        "stores": stores,
        "sram_bytes": lay.sram_bytes,
        "pmus": pmus_for(lay.sram_bytes, target.memory["sram"].capacity_bytes, target.compute.pmus),
        "estimate": {
            "flops": flops,
            "bytes": pairs,
            **cost.to_json(),
        },
    }


def _liveness(buffers: dict, kernels: list[dict], outputs: list[str]) -> None:
    """live = [defining kernel, last kernel reading it]; outputs live to the end."""

    def root(b: str) -> str:
        return buffers[b].get("alias_of", b)

    for i, k in enumerate(kernels):
        streams = [op[key] for op in k["ops"] for key in ("b_stream", "gather_from") if key in op]
        for dma in k["loads"] + streams:
            for b in {dma["buffer"], root(dma["buffer"])}:
                buffers[b]["live"][1] = max(buffers[b]["live"][1], i)
    end = len(kernels)
    for b in outputs:
        buffers[b]["live"][1] = end
        buffers[root(b)]["live"][1] = end
    for b in buffers.values():
        if b["kind"] != "activation":
            b["live"] = [-1, end]


def summarize(schedule: dict) -> dict:
    """Totals of the per-kernel estimates and peak occupancy per tier, as the runtime reports."""
    kernels = schedule["kernels"]
    pairs: dict[str, int] = defaultdict(int)
    for k in kernels:
        for pair, n in k["estimate"]["bytes"].items():
            pairs[pair] += n
    cycles = sum(k["estimate"]["cycles"] for k in kernels)
    clock = schedule["target"]["compute"]["clock_hz"]
    return {
        "kernels": len(kernels),
        "flops": sum(k["estimate"]["flops"] for k in kernels),
        "cycles": cycles,
        "seconds": cycles / clock,
        "bytes": dict(sorted(pairs.items())),
        "peak_bytes": peak_occupancy(schedule),
    }


def resident_bytes(schedule: dict) -> dict[tuple[str, str], list[int]]:
    """Bytes live per (tier, buffer kind) before the first kernel, then during each kernel.

    Entry ``i + 1`` of each list is what is resident while kernel ``i`` runs
    (entry 0: before kernel 0), from the buffers' ``live`` ranges; aliases share
    their root's bytes. A difference array keeps it linear in buffers + kernels.
    """
    n = len(schedule["kernels"])
    delta: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * (n + 2))
    for b in schedule["buffers"].values():
        if "alias_of" in b:
            continue
        first, last = max(b["live"][0], -1), min(b["live"][1], n - 1)
        if first > last:
            continue
        d = delta[(b["tier"], b["kind"])]
        d[first + 1] += b["bytes"]
        d[last + 2] -= b["bytes"]
    resident = {}
    for key, d in sorted(delta.items()):
        total, series = 0, []
        for x in d[: n + 1]:
            total += x
            series.append(total)
        resident[key] = series
    return resident


def peak_occupancy(schedule: dict) -> dict[str, int]:
    """Peak bytes per tier over the kernel sequence, from buffer lifetimes."""
    kernels = schedule["kernels"]
    peak = {"sram": max((k["sram_bytes"] for k in kernels), default=0), "hbm": 0, "ddr": 0}
    by_tier: dict[str, list[int]] = {}
    for (tier, _), series in resident_bytes(schedule).items():
        acc = by_tier.setdefault(tier, [0] * len(series))
        by_tier[tier] = [a + x for a, x in zip(acc, series, strict=True)]
    for tier in ("hbm", "ddr"):
        peak[tier] = max(by_tier.get(tier, [0]))
    return peak
