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

import torch
from xdsl.dialects import func

from coec.frontend.common import Program
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.models.zoo import ZooInstance, make_embed, make_head, make_layer
from coec.pipeline import Compiled, Options, Pipeline
from coec.stitch import Binding, Parts, stitch


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


def zoo_steps(inst: ZooInstance) -> int:
    """How many steps ``compile_zoo`` reports: three parts, each layer, placement, emission."""
    return 3 + inst.arch.layers + 2


def compile_zoo(inst: ZooInstance, options: Options, progress: Progress | None = None) -> Compiled:
    """Compile a zoo model with its decoder layer compiled once and reused."""
    total, done = zoo_steps(inst), 0

    def step(what: str) -> None:
        nonlocal done
        if progress:
            progress(done, total, what)
        done += 1

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
    if progress:
        progress(done, total, "compiled")
    return Compiled(program, target, schedule, {})
