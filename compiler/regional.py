"""Regional compilation: compile a repeated decoder layer once, reuse it N times.

The embedding, one decoder layer and the head are each exported, lowered, fused
and tiled once (under tensor parallelism: one socket's shard of each, every
socket's weights sliced from the unsharded model's). The layer's fused and tiled IR is
then cloned once per layer into one function (``coec.stitch``) — its weights renamed
``layers.<i>.<name>`` and bound to that layer's parameters, its folded constants (RoPE
tables, ALiBi biases, which depend on shapes only) shared — and placement plans memory
for the whole model. So
compile time grows with the number of layers only by cloning, and every layer's
kernels and counts are the same by construction (the paper's kernel looping).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Block, Operation, Region, SSAValue

from coec.frontend.common import Program
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.ir import ops as df
from coec.ir.errors import UnsupportedOpError
from coec.models.zoo import ZooInstance, make_embed, make_head, make_layer
from coec.pipeline import Compiled, Options, Pipeline
from coec.stitch import Binding, Parts, Stitcher, stitch


def lower_part(module: torch.nn.Module, inputs: tuple, dtype: str) -> Program:
    """One part exported and lowered to df IR (before any pass)."""
    module.eval()  # coec's own part modules: inference, never trained
    return lower_program(export_module(module, inputs), dtype)


def lower_parts(inst: ZooInstance, sockets: int, dtype: str) -> Parts:
    """The parts of ``inst`` (one socket's shards of ``sockets``) lowered, before any pass:
    what a sweep compiles for each target (they depend on the model, its shape, the
    socket count and the dtype only)."""
    return Parts(*(lower_part(m, inputs, dtype) for _, m, inputs in zoo_parts(inst, sockets)))


def shard_cache(inst: ZooInstance, cache: torch.Tensor, socket: int, sockets: int) -> torch.Tensor:
    """Socket ``socket``'s KV heads of a full cache (replicated when heads < sockets)."""
    kv = inst.arch.kv_heads
    per = max(1, kv // sockets)
    first = socket * kv // sockets
    return cache[:, first : first + per]


def shard_inputs(inst: ZooInstance, socket: int, sockets: int) -> list[torch.Tensor]:
    """The inputs socket ``socket`` runs on: every token id, its share of each cache."""
    return [inst.ids, *(shard_cache(inst, c, socket, sockets) for c in inst.caches)]


def zoo_parts(inst: ZooInstance, sockets: int = 1) -> list[tuple[str, torch.nn.Module, tuple]]:
    """(name, module, example inputs) of the parts regional compilation compiles: the
    embedding, one decoder layer (one socket's shard) and the head."""
    arch, tokens = inst.arch, inst.ids.shape[1]
    with torch.device(inst.ids.device):
        h = torch.zeros(inst.batch, tokens, arch.hidden)
        layer = make_layer(arch, inst.model.layers[0].past, sockets)
        embed = make_embed(arch, sockets) if sockets > 1 else inst.model.embed
        head = make_head(arch, sockets) if sockets > 1 else inst.model.head
    caches = [shard_cache(inst, c, 0, sockets) for c in inst.caches[:2]]
    return [("embed", embed, (inst.ids,)), ("layer", layer, (h, *caches)), ("head", head, (h,))]


#: ``progress(done, total, what)``: ``done`` of ``total`` steps finished, ``what`` runs next
Progress = Callable[[int, int, str], None]


class _Steps:
    """A compile's steps, told to ``progress`` as each begins (and ``done()`` at the end)."""

    def __init__(self, total: int, progress: Progress | None) -> None:
        self.total, self.progress, self.count = total, progress, 0

    def __call__(self, what: str) -> None:
        if self.progress:
            self.progress(self.count, self.total, what)
        self.count += 1

    def done(self) -> None:
        if self.progress:
            self.progress(self.count, self.total, "compiled")


def zoo_steps(inst: ZooInstance) -> int:
    """How many steps ``compile_zoo`` reports: three parts, each layer, placement, emission."""
    return 3 + inst.arch.layers + 2


def compile_zoo(inst: ZooInstance, options: Options, progress: Progress | None = None) -> Compiled:
    """Compile a zoo model with its decoder layer compiled once and reused."""
    step = _Steps(zoo_steps(inst), progress)
    pipeline = Pipeline(options)
    options, target = pipeline.options, pipeline.target
    m, arch, tp = inst.model, inst.arch, target.sockets
    specs = zoo_parts(inst, tp)  # one socket's shards (on one socket: the model's own parts)
    programs = []
    parts = ("the embedding", "a decoder layer", "the head")
    for (_, module, inputs), what in zip(specs, parts, strict=True):
        step(f"exporting {what}")
        program = lower_part(module, inputs, options.dtype)
        pipeline.run(program.module, until="tile")  # the per-function passes
        programs.append(program)
    (_, embed, _), (_, layer, _), (_, head, _) = specs
    binding = Binding(  # each clone's weights: its layer's, sliced for each socket
        (dict(m.embed.state_dict()), getattr(embed, "shard", None)),
        lambda i: (dict(m.layers[i].state_dict()), layer.shard),
        (dict(m.head.state_dict()), getattr(head, "shard", None)),
    )
    module, weights = stitch(Parts(*programs), arch.layers, tp, binding, step)
    fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
    step("placing memory")
    pipeline.run(module, start="place")
    program = Program(
        module,
        weights[0],
        [a.name_hint for a in fn.body.block.args],
        options.dtype,
        socket_weights=weights if tp > 1 else None,
    )
    step("emitting the schedule")
    schedule = pipeline.emit(
        module,
        {
            "model": arch.name,
            "phase": inst.phase,
            "batch": inst.batch,
            "seq": inst.seq,
            "layers": arch.layers,
            "sockets": tp,
        },
    )
    step.done()
    return Compiled(program, target, schedule, {})


# -- a transformers model from its config: the lowered short model cut into its parts --------
@dataclass
class _Segment:
    """One part of a lowered model: the ops before the layers, one layer, or those after;
    ``program``'s arguments stand for ``inputs`` and its results for ``outputs`` (values of
    the whole lowered function)."""

    name: str
    program: Program
    inputs: list[SSAValue]
    outputs: list[SSAValue]


def split_layers(program: Program, layer_of: Callable[[Operation], int | None]) -> list[_Segment]:
    """``program``'s function cut into ``pre``, one segment per layer, and ``post``.

    ``layer_of(op)`` names the layer a compute op belongs to (from its module path); an
    op of no layer is ``pre`` unless it reads what a layer or ``post`` made. Weights and
    constants are copied into each segment that reads them. A layer may read only what
    ``pre``, the layer before it and the function's arguments hold."""
    fn = program.func
    body = [op for op in fn.body.block.ops if not isinstance(op, func.ReturnOp)]
    sources = (df.WeightOp, df.ConstantOp)
    computes = [op for op in body if not isinstance(op, sources)]
    layers = sorted({j for op in computes if (j := layer_of(op)) is not None})
    if layers != list(range(len(layers))) or not layers:
        raise UnsupportedOpError(f"the model's layers {layers} are not its first ones in order")
    post = len(layers) + 1
    seg: dict[Operation, int] = {}
    for op in computes:
        j = layer_of(op)
        if j is not None:
            seg[op] = j + 1
        else:
            made = [seg.get(v.owner, 0) for v in op.operands if isinstance(v.owner, Operation)]
            seg[op] = post if any(m >= 1 for m in made) else 0
        for v in op.operands:
            k, here = seg.get(v.owner), seg[op]
            if k is None:
                continue
            skips = 1 <= k < here - 1 and here < post  # a layer reading past the one before
            if k > here or skips:
                raise UnsupportedOpError(
                    f"{op.name} in part {here} reads what part {k} makes: each layer may "
                    "read only the parts before the layers and the layer before it"
                )
    returned = list(fn.body.block.last_op.operands)
    segments = []
    for k in range(post + 1):
        ops = [op for op in computes if seg[op] == k]
        name = "pre" if k == 0 else "post" if k == post else f"layer {k - 1}"
        segments.append(_segment(name, program, ops, seg, k, returned))
    return segments


def _segment(name, program, ops, seg, k, returned) -> _Segment:
    members = set(ops)
    inputs: list[SSAValue] = []
    for op in ops:
        for v in op.operands:
            made_here = v.owner in members or isinstance(v.owner, df.WeightOp | df.ConstantOp)
            if not made_here and v not in inputs:
                inputs.append(v)
    outputs = [
        op.results[0]
        for op in ops
        if op.results[0] in returned
        or any(seg.get(u.operation, k) != k for u in op.results[0].uses)
    ]
    block = Block()
    mapping: dict[SSAValue, SSAValue] = {}
    for v in inputs:
        a = block.insert_arg(v.type, len(block.args))
        a.name_hint = v.name_hint
        mapping[v] = a
    weights, origins = {}, {}
    for op in ops:
        for v in op.operands:
            if v not in mapping and isinstance(v.owner, df.WeightOp | df.ConstantOp):
                source = v.owner.clone()
                block.add_op(source)
                mapping[v] = source.results[0]
                mapping[v].name_hint = v.name_hint
                if isinstance(source, df.WeightOp):
                    weights[source.sym_name.data] = program.weights[source.sym_name.data]
        clone = op.clone(value_mapper=mapping)
        block.add_op(clone)
        for old, new in zip(op.results, clone.results, strict=True):
            new.name_hint = old.name_hint
        if op in program.origins:
            origins[clone] = program.origins[op]
    block.add_op(func.ReturnOp(*(mapping[v] for v in outputs)))
    fn = func.FuncOp(
        "main", ([a.type for a in block.args], [v.type for v in outputs]), Region(block)
    )
    part = Program(ModuleOp([fn]), weights, [v.name_hint or "x" for v in inputs], program.dtype)
    part.origins = origins
    return _Segment(name, part, inputs, outputs)


def _stream(outputs: list[SSAValue], inputs: list[SSAValue], made_by: set) -> list[SSAValue]:
    """The inputs of a layer that its ``outputs`` (what the next part reads) become for
    the next layer — the residual stream: read from ``made_by`` (the part before), one
    for each output, matched by type in order."""
    free = [v for v in inputs if v in made_by]
    stream = []
    for out in outputs:
        match = next((v for v in free if v.type == out.type and v not in stream), None)
        if match is None:
            raise UnsupportedOpError(
                f"cannot tell which input of a layer its output {out.name_hint} continues"
            )
        stream.append(match)
    return stream


def hf_steps(hf) -> int:
    """How many steps ``compile_hf`` reports: export, its parts, each layer, placement,
    emission."""
    return 1 + hf.short_layers + 2 + len(hf.kinds) + 2


def compile_hf(
    hf,
    phase: str,
    seq: int,
    batch: int,
    options: Options,
    device: str = "meta",
    progress: Progress | None = None,
) -> tuple[Compiled, torch.nn.Module, tuple]:
    """Compile a transformers model (``coec.models.hf_config.HFModel``) with each kind of
    layer compiled once: a short model holding one layer of each kind is exported and
    lowered whole (through the family's own forward: embeddings, positions, masks), cut
    into the part before the layers, one part per layer and the part after
    (``split_layers``), each fused and tiled, then cloned into the whole model: layer i
    is its kind's part, reading the layer before's output and its own KV caches, its
    weights the whole model's layer i. Returns the compiled model, the whole model's step
    (``HFStep``: the reference it computes) and its inputs."""
    from coec.frontend.export import export_module
    from coec.models.hf_config import build_model, layer_index, step_and_inputs

    step = _Steps(hf_steps(hf), progress)
    pipeline = Pipeline(options)
    options, target = pipeline.options, pipeline.target
    n = len(hf.kinds)
    short = build_model(hf.config, device, hf.short_layers) if hf.short_layers < n else hf.model
    short_step, short_inputs = step_and_inputs(hf, short, phase, seq, batch, device)
    whole, inputs = step_and_inputs(hf, hf.model, phase, seq, batch, device)
    step(f"exporting {hf.short_layers} layer(s)")
    program = lower_program(export_module(short_step, short_inputs), options.dtype)

    def layer_of(op: Operation) -> int | None:
        return layer_index(program.origins.get(op, "").split(" at ")[0], hf.layers_path)

    segments = split_layers(program, layer_of)
    for seg in segments:
        step(f"compiling {seg.name}")
        if target.sockets > 1:
            _shard_segment(seg, program, target.sockets)
        pipeline.run(seg.program.module, until="tile")
    st = Stitcher(1)
    stitched = _stitch_layers(st, program, segments, hf, (dict(whole.state_dict()), None), step)
    step("placing memory")
    module = ModuleOp([stitched])
    pipeline.run(module, start="place")
    whole_program = Program(module, st.weights[0], list(st.names), options.dtype)
    whole_program.mutated_inputs = st.mutated
    if target.sockets > 1:  # each socket's weights, cut as the sharding laid them out
        whole_program.socket_weights = _socket_weights(stitched, st.weights[0], target.sockets)
        whole_program.weights = whole_program.socket_weights[0]
    step("emitting the schedule")
    meta = {"model": hf.name, "phase": phase, "batch": batch, "seq": seq, "layers": n}
    schedule = pipeline.emit(module, {**meta, "sockets": target.sockets})
    step.done()
    return Compiled(whole_program, target, schedule, {}), whole, inputs


def _shard_segment(seg: _Segment, program: Program, sockets: int) -> None:
    """One socket's program of a segment (``coec.passes.sharding``): what it hands on and
    what the parts share is whole; its KV caches are laid out by their first reader, and
    the caches it writes keep their layout."""
    from coec.passes.sharding import R, shard_function

    args = list(program.func.body.block.args)
    mutated = {
        program.func.body.block.last_op.operands[p]: args[program.input_names.index(name)]
        for p, name in enumerate(program.mutated_inputs)
    }
    writes = {i: mutated[v] for i, v in enumerate(seg.outputs) if v in mutated}
    layouts = [None if v in mutated.values() else R for v in seg.inputs]
    in_place = {i: seg.inputs.index(a) if a in seg.inputs else None for i, a in writes.items()}
    shard_function(seg.program.func, sockets, layouts, in_place)


def _socket_weights(fn: func.FuncOp, weights: dict, sockets: int) -> list[dict]:
    """Each socket's weights: every weight cut as its ``shard`` attribute says."""
    from coec.passes.sharding import slice_for, weight_layout

    layouts = {
        op.sym_name.data: weight_layout(op) for op in fn.walk() if isinstance(op, df.WeightOp)
    }
    return [
        {k: slice_for(w, layouts.get(k, (-1, 1)), s, sockets) for k, w in weights.items()}
        for s in range(sockets)
    ]


def _arg_type(seg: _Segment, a: SSAValue, program: Program, returned: list[SSAValue]):
    """The type of a layer's own argument ``a`` as its (maybe sharded) segment has it: of
    the segment's argument reading it, or of the result written into it."""
    if a in seg.inputs:
        return seg.program.func.body.block.args[seg.inputs.index(a)].type
    names = program.input_names
    p = program.mutated_inputs.index(names[list(program.func.body.block.args).index(a)])
    out = seg.outputs.index(returned[p])
    return seg.program.func.body.block.last_op.operands[out].type


def _stitch_layers(st: Stitcher, program: Program, segments, hf, params, step) -> func.FuncOp:
    """The whole model's function from the short model's segments (``compile_hf``): its
    arguments the short model's, each layer's own (its KV caches) once per layer; its
    results each layer's updated caches (written in place: ``st.mutated`` names them),
    then the model's outputs."""
    import re

    pre, layers, post = segments[0], segments[1:-1], segments[-1]
    args = list(program.func.body.block.args)
    read_by: dict[SSAValue, list[int]] = {}
    for k, seg in enumerate(segments):
        for v in seg.inputs:
            read_by.setdefault(v, []).append(k)
    returned = list(program.func.body.block.last_op.operands)
    name = dict(zip(args, program.input_names, strict=True))
    # a layer's own arguments, made once per layer of the whole model: what only it reads
    # and what it writes in place (its KV caches)
    own = {a: ks[0] - 1 for a in args if len(ks := read_by.get(a, [])) == 1}
    own = {a: j for a, j in own.items() if 0 <= j < len(layers)}
    for p, arg in enumerate(program.mutated_inputs):
        a = next(a for a in args if name[a] == arg)
        own[a] = next(j for j, seg in enumerate(layers) if returned[p] in seg.outputs)
    shared = {a: st.arg(a.type, name[a]) for a in args if a not in own}
    made = dict(
        zip(
            pre.outputs,
            st.clone(pre.program, [shared[a] for a in pre.inputs], "", params, rename=str),
            strict=True,
        )
    )
    outputs = returned[len(program.mutated_inputs) :]  # the model's own (not caches)
    # what each layer hands the parts after it (the residual stream), by position: what a
    # later part reads, or the model returns (an encoder's last hidden state)
    handed = [
        [v for v in seg.outputs if v in outputs or any(k > j + 1 for k in read_by.get(v, []))]
        for j, seg in enumerate(layers)
    ]
    if any([v.type for v in h] != [v.type for v in handed[0]] for h in handed):
        raise UnsupportedOpError(f"{hf.name}: its kinds of layer hand on different values")
    first = _stream(handed[0], layers[0].inputs, set(pre.outputs))
    stream = [made[v] for v in first]
    position = [{v: p for p, v in enumerate(first)}]
    for j in range(1, len(layers)):
        position.append({v: handed[j - 1].index(v) for v in layers[j].inputs if v in handed[j - 1]})
    mutated_args = {name[a]: a for a in args if name[a] in program.mutated_inputs}
    results: list[SSAValue] = []
    st.mutated = []
    path = re.escape(hf.layers_path)
    for i, j in enumerate(hf.kinds):
        step(f"layer {i + 1}/{len(hf.kinds)}")
        seg = layers[j]
        mine = {
            a: st.arg(_arg_type(seg, a, program, returned), f"{name[a]}_layer{i}")
            for a in args
            if own.get(a) == j
        }
        ins = []
        for v in seg.inputs:
            if v in mine:
                ins.append(mine[v])
            elif v in shared:
                ins.append(shared[v])
            elif v in position[j]:
                ins.append(stream[position[j][v]])
            elif v in made:
                ins.append(made[v])
            else:
                raise UnsupportedOpError(f"{hf.name}: layer {j} reads {v.name_hint} of no part")

        def rename(name: str, j: int = j, i: int = i) -> str:
            return re.sub(rf"(^|\.)({path})\.{j}\.", rf"\g<1>\g<2>.{i}.", name, count=1)

        outs = dict(
            zip(seg.outputs, st.clone(seg.program, ins, "", params, rename=rename), strict=True)
        )
        stream = [outs[v] for v in handed[j]]
        for p, arg in enumerate(program.mutated_inputs):
            if returned[p] in outs:  # this layer's cache, updated in place
                results.append(outs[returned[p]])
                st.mutated.append(st.names[st.block.args.index(mine[mutated_args[arg]])])
    last = {v: p for p, v in enumerate(handed[-1])}
    ins = []
    for v in post.inputs:
        if v in last:
            ins.append(stream[last[v]])
        elif v in made:
            ins.append(made[v])
        elif v in shared:
            ins.append(shared[v])
        else:
            raise UnsupportedOpError(f"{hf.name}: the head reads {v.name_hint} of no part")
    outs = dict(zip(post.outputs, st.clone(post.program, ins, "", params, rename=str), strict=True))
    for v in outputs:
        results.append(outs[v] if v in outs else stream[last[v]] if v in last else made[v])
    st.block.add_op(func.ReturnOp(*results))
    for k, kernel in enumerate(op for op in st.block.ops if isinstance(op, df.KernelOp)):
        kernel.sym_name = StringAttr(f"k{k}")
    return func.FuncOp(
        "main",
        ([a.type for a in st.block.args], [v.type for v in results]),
        Region(st.block),
    )
