"""Stitching: one function from a zoo model's parts — the embedding, the decoder layer
cloned once per layer, the head — each compiled (fused and tiled) once beforehand.

Regional compilation (``coec.regional``) exports the parts, compiles them and stitches
them, binding every clone to its layer's weights. A count-only stitch binds none: it
needs only the parts' IR, so a design-space sweep stitches from parts it lowered once,
kept as text (``Parts.to_json``), without torch or the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Block, Region, SSAValue

from coec.frontend.common import Program
from coec.ir import ops as df

PARTS_FORMAT = "coec.parts/1"
PART_NAMES = ("embed", "layer", "head")

#: ``shard(name, params, socket)``: socket ``socket``'s tensor of a part's parameter ``name``
Shard = Callable[[str, dict, int], Any]
#: (the unsharded module's state dict, its shard function or None)
Params = tuple[dict, Shard | None]


@dataclass
class Parts:
    """A zoo model's parts as df IR: the embedding, one decoder layer (one socket's shard
    under tensor parallelism) and the head."""

    embed: Program
    layer: Program
    head: Program

    def __iter__(self):
        return iter((self.embed, self.layer, self.head))

    @property
    def decode(self) -> bool:
        """Whether the layer reads a KV cache (its inputs: hidden, past K, past V)."""
        return len(self.layer.func.body.block.args) == 3

    def clone(self) -> Parts:
        """A copy whose IR a pipeline may change (weights shared, not copied)."""
        return Parts(*(replace(p, module=p.module.clone()) for p in self))

    def to_json(self) -> dict:
        """The parts' IR as text (no weights): what a sweep ships to its workers and caches."""
        from coec.ir import print_module

        return {
            "format": PARTS_FORMAT,
            "dtype": self.layer.dtype,
            **{name: print_module(p.module) for name, p in zip(PART_NAMES, self, strict=True)},
        }

    @classmethod
    def from_json(cls, data: dict) -> Parts:
        from coec.ir import parse_module

        def program(name: str) -> Program:
            module = parse_module(data[name], f"<{name}>")
            fn = next(op for op in module.ops if isinstance(op, func.FuncOp))
            names = [a.name_hint or f"arg{i}" for i, a in enumerate(fn.body.block.args)]
            return Program(module, {}, names, data["dtype"], source=f"<{name}>")

        return cls(*(program(n) for n in PART_NAMES))


@dataclass
class Binding:
    """Where a stitched model's weights come from: each part's parameters by layer."""

    embed: Params
    layer: Callable[[int], Params]  # layer i's
    head: Params


class Stitcher:
    """Builds one function from part functions cloned in sequence."""

    def __init__(self, sockets: int) -> None:
        self.block = Block()
        self.weights: list[dict[str, Any]] = [{} for _ in range(sockets)]
        self.shared: dict[str, SSAValue] = {}
        self.names: list[str] = []  # the arguments' names, as given
        self.mutated: list[str] = []  # the arguments written in place, in result order

    def arg(self, t, hint: str) -> SSAValue:
        a = self.block.insert_arg(t, len(self.block.args))
        a.name_hint = hint
        self.names.append(hint)
        return a

    def clone(
        self,
        part: Program,
        inputs: list[SSAValue],
        prefix: str,
        params: Params | None,
        rename: Callable[[str], str] | None = None,
    ) -> list[SSAValue]:
        """Clone ``part``'s body reading ``inputs``; returns what it returns.

        ``params`` (the unsharded module's state dict and its shard function) binds the
        clone's weights; None binds none. A parameter is named ``prefix + name`` in the
        whole function, or ``rename(name)``, which then also names it in the state dict.
        A weight two parts read (a tied embedding and LM head) is one weight.
        """
        fn = part.func
        mapping: dict[SSAValue, SSAValue] = dict(zip(fn.body.block.args, inputs, strict=True))
        for op in fn.body.block.ops:
            if isinstance(op, func.ReturnOp):
                return [mapping[v] for v in op.operands]
            if isinstance(op, df.WeightOp):
                name = op.sym_name.data
                param = op.kind.data == "param"
                if param:
                    new_name = rename(name) if rename else prefix + name
                    key = new_name if rename else name
                else:  # folded constants depend on shapes only: one copy serves every layer
                    new_name = "const." + name
                if new_name in self.shared:
                    if _alike(self.shared[new_name].owner, op):
                        mapping[op.result] = self.shared[new_name]
                        continue
                    # a tied weight laid out otherwise here (sharded one way for a lookup,
                    # another for a matmul): a second copy, as each socket holds it
                    new_name += f".as_{len([k for k in self.shared if k.startswith(new_name)])}"
                if params is not None:
                    state, shard = params
                    for s, weights in enumerate(self.weights):
                        if not param:
                            weights[new_name] = part.weights[name]
                        else:
                            weights[new_name] = shard(key, state, s) if shard else state[key]
                clone = df.WeightOp(new_name, op.kind.data, op.out_type)
                clone.result.name_hint = op.result.name_hint
                for attr in ("shard",):  # a sharded weight's layout (coec.passes.sharding)
                    if attr in op.attributes:
                        clone.attributes[attr] = op.attributes[attr]
                self.block.add_op(clone)
                mapping[op.result] = self.shared[new_name] = clone.result
                continue
            clone = op.clone(value_mapper=mapping)
            self.block.add_op(clone)
        raise AssertionError("a part function without a return")


def _alike(a: df.WeightOp, b: df.WeightOp) -> bool:
    """Whether two weight ops of one name are one weight (same type and layout)."""
    return a.out_type == b.out_type and a.attributes.get("shard") == b.attributes.get("shard")


def stitch(
    parts: Parts,
    layers: int,
    sockets: int,
    binding: Binding | None = None,
    step: Callable[[str], None] | None = None,
) -> tuple[ModuleOp, list[dict[str, Any]]]:
    """One ``main``: the embedding, ``layers`` clones of the layer, the head; and each
    socket's weights (empty without ``binding``). ``step(what)`` is told of each layer."""
    st = Stitcher(sockets)
    embed, layer, head = parts
    ids = st.arg(embed.func.body.block.args[0].type, "input_ids")
    caches = [
        st.arg(layer.func.body.block.args[1 + j].type, f"past_{'kv'[j]}_{i}")
        for i in range(layers)
        for j in range(2)
        if parts.decode
    ]
    (hidden,) = st.clone(embed, [ids], "embed.", binding and binding.embed)
    kv = []
    for i in range(layers):
        if step:
            step(f"layer {i + 1}/{layers}")
        past = caches[2 * i : 2 * i + 2]
        hidden, k, v = st.clone(
            layer, [hidden, *past], f"layers.{i}.", binding and binding.layer(i)
        )
        kv += [k, v]
    (logits,) = st.clone(head, [hidden], "head.", binding and binding.head)
    st.block.add_op(func.ReturnOp(logits, *kv))
    for i, kernel in enumerate(op for op in st.block.ops if isinstance(op, df.KernelOp)):
        kernel.sym_name = StringAttr(f"k{i}")
    fn = func.FuncOp(
        "main",
        ([a.type for a in st.block.args], [v.type for v in st.block.last_op.operands]),
        Region(st.block),
    )
    return ModuleOp([fn]), st.weights
