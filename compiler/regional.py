"""Regional compilation: compile a repeated decoder layer once, reuse it N times.

The embedding, one decoder layer and the head are each exported, lowered, fused
and tiled once (under tensor parallelism: one socket's shard of each, every
socket's weights sliced from the unsharded model's). The layer's fused and tiled IR is then cloned once per layer into
one function — its weights renamed ``layers.<i>.<name>`` and bound to that
layer's parameters, its folded constants (RoPE tables, ALiBi biases, which depend
on shapes only) shared — and placement plans memory for the whole model. So
compile time grows with the number of layers only by cloning, and every layer's
kernels and counts are the same by construction (the paper's kernel looping).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Block, Region, SSAValue

from coec.frontend.common import Program
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.ir import ops as df
from coec.models.zoo import ZooInstance, make_embed, make_head, make_layer
from coec.pipeline import Compiled, Options, Pipeline


class _Stitcher:
    """Builds one function from part functions cloned in sequence."""

    def __init__(self, sockets: int) -> None:
        self.block = Block()
        self.weights: list[dict[str, torch.Tensor]] = [{} for _ in range(sockets)]
        self.shared: dict[str, SSAValue] = {}

    def arg(self, t, hint: str) -> SSAValue:
        a = self.block.insert_arg(t, len(self.block.args))
        a.name_hint = hint
        return a

    def clone(
        self,
        part: Program,
        inputs: list[SSAValue],
        prefix: str,
        params: dict[str, torch.Tensor],
        shard: Callable[[str, dict[str, torch.Tensor], int], torch.Tensor] | None = None,
    ) -> list[SSAValue]:
        """Clone ``part``'s body reading ``inputs``; returns what it returns.

        ``params`` is the unsharded module's state dict; ``shard(name, params, socket)``,
        when given, is socket ``socket``'s tensor of the part's parameter ``name``.
        """
        fn = part.func
        mapping: dict[SSAValue, SSAValue] = dict(zip(fn.body.block.args, inputs, strict=True))
        for op in fn.body.block.ops:
            if isinstance(op, func.ReturnOp):
                return [mapping[v] for v in op.operands]
            if isinstance(op, df.WeightOp):
                name = op.sym_name.data
                if op.kind.data == "param":
                    new_name = prefix + name
                    for s, weights in enumerate(self.weights):
                        weights[new_name] = shard(name, params, s) if shard else params[name]
                else:  # folded constants depend on shapes only: one copy serves every layer
                    new_name = "const." + name
                    if new_name in self.shared:
                        mapping[op.result] = self.shared[new_name]
                        continue
                    for weights in self.weights:
                        weights[new_name] = part.weights[name]
                clone = df.WeightOp(new_name, op.kind.data, op.out_type)
                clone.result.name_hint = op.result.name_hint
                self.block.add_op(clone)
                mapping[op.result] = clone.result
                if op.kind.data != "param":
                    self.shared[new_name] = clone.result
                continue
            clone = op.clone(value_mapper=mapping)
            self.block.add_op(clone)
        raise AssertionError("a part function without a return")


def _lower_part(module: torch.nn.Module, inputs: tuple, pipeline: Pipeline) -> Program:
    """One part exported, lowered and run through the per-function passes (up to tiling)."""
    module.eval()  # coec's own part modules: inference, never trained
    program = lower_program(export_module(module, inputs), pipeline.options.dtype)
    pipeline.run(program.module, until="tile")
    return program


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
    tokens = inst.ids.shape[1]
    with torch.device(inst.ids.device):  # parameters of the parts are bound below
        h = torch.zeros(inst.batch, tokens, arch.hidden)
        shard = make_layer(arch, inst.model.layers[0].past, tp)
        # one socket's vocabulary shards (on one socket: the model's own parts)
        embed_shard = make_embed(arch, tp) if tp > 1 else m.embed
        head_shard = make_head(arch, tp) if tp > 1 else m.head
    caches = [shard_cache(inst, c, 0, tp) for c in inst.caches[:2]]
    step("exporting the embedding")
    embed = _lower_part(embed_shard, (inst.ids,), pipeline)
    step("exporting a decoder layer")
    layer = _lower_part(shard, (h, *caches), pipeline)
    step("exporting the head")
    head = _lower_part(head_shard, (h,), pipeline)

    st = _Stitcher(tp)
    ids = st.arg(embed.func.body.block.args[0].type, "input_ids")
    caches = [
        st.arg(layer.func.body.block.args[1 + j].type, f"past_{'kv'[j]}_{i}")
        for i in range(arch.layers)
        for j in range(2)
        if inst.caches
    ]
    (hidden,) = st.clone(
        embed, [ids], "embed.", dict(m.embed.state_dict()), getattr(embed_shard, "shard", None)
    )
    kv = []
    for i, block in enumerate(m.layers):
        step(f"layer {i + 1}/{arch.layers}")
        past = caches[2 * i : 2 * i + 2]
        hidden, k, v = st.clone(
            layer, [hidden, *past], f"layers.{i}.", dict(block.state_dict()), shard.shard
        )
        kv += [k, v]
    (logits,) = st.clone(
        head, [hidden], "head.", dict(m.head.state_dict()), getattr(head_shard, "shard", None)
    )
    st.block.add_op(func.ReturnOp(logits, *kv))
    for i, kernel in enumerate(op for op in st.block.ops if isinstance(op, df.KernelOp)):
        kernel.sym_name = StringAttr(f"k{i}")
    fn = func.FuncOp(
        "main",
        ([a.type for a in st.block.args], [v.type for v in st.block.last_op.operands]),
        Region(st.block),
    )
    module = ModuleOp([fn])
    step("placing memory")
    pipeline.run(module, start="place")
    program = Program(
        module,
        st.weights[0],
        [a.name_hint for a in st.block.args],
        options.dtype,
        socket_weights=st.weights if tp > 1 else None,
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
