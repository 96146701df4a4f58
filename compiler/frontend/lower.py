"""Lower an exported ATen graph into the df dialect.

The walk is torch.fx's Interpreter habit: one pass over the nodes, one handler
per ATen op (``LOWERINGS``). Two rules keep the IR small and honest:

- **constant folding**: a node that depends on no user input and no parameter
  (causal masks, RoPE tables, position ids, ``arange``/``full``...) is evaluated
  with torch at compile time and enters the IR as one ``df.weight`` of kind
  ``constant`` (or a ``df.constant`` scalar);
- **storage dtype**: floating tensors are stored in the chosen dtype (bf16 by
  default, as the SN40L runs); integer and bool tensors keep theirs.
"""

from __future__ import annotations

import operator
import re

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from coec.frontend.common import Program, name_hint
from coec.frontend.registry import aten_lowerings
from coec.ir import ops as df
from coec.ir.errors import UnsupportedOpError
from coec.ir.types import TensorType

_INT_DTYPES = {
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.int8: "i8",
    torch.uint8: "u8",
    torch.bool: "i1",
}


def source_line(node: torch.fx.Node) -> str:
    """The user's source line that produced ``node`` ('model.py:12: y = f(x)')."""
    trace = node.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in \S+\n\s*(.*)', trace)
    user = [f for f in frames if "site-packages" not in f[0] and "/torch/" not in f[0]]
    if not (user or frames):
        stack = node.meta.get("nn_module_stack") or {}
        owner = list(stack.values())[-1][1] if stack else "the model"
        return f"in {owner}"
    path, line, code = (user or frames)[0 if user else -1]
    return f"{path}:{line}: {code.strip()}"


def origin(node: torch.fx.Node) -> str:
    """Where the user wrote ``node``: its module path and source line."""
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return f"{path or '<top>'} at {source_line(node)}"


class Lowering:
    """State of one lowering: FX node -> df value, folded constants, emitted ops."""

    def __init__(self, program: ExportedProgram, dtype: str):
        self.ep, self.dtype = program, dtype
        self.block = Block()
        self.values: dict[torch.fx.Node, SSAValue | list] = {}
        self.consts: dict[torch.fx.Node, object] = {}
        self.params: dict[torch.fx.Node, str] = {}
        self.weights: dict[str, torch.Tensor] = {}
        self.input_names: list[str] = []
        self.origins: dict[Operation, str] = {}  # op -> the user's module and source line
        self._materialized: dict[torch.fx.Node, SSAValue] = {}
        self.node: torch.fx.Node | None = None

    # -- types -----------------------------------------------------------------------
    def storage(self, dtype: torch.dtype) -> str:
        if dtype.is_floating_point:
            return self.dtype
        if dtype in _INT_DTYPES:
            return _INT_DTYPES[dtype]
        raise self.unsupported(f"dtype {dtype}")

    def type_of(self, node: torch.fx.Node) -> TensorType:
        return self.type_of_value(node.meta["val"])

    def type_of_value(self, val: torch.Tensor) -> TensorType:
        """The df type of a (fake) tensor: one of a node's results."""
        return TensorType(tuple(int(d) for d in val.shape), self.storage(val.dtype))

    def like(self, v: SSAValue, shape=None, dtype: str | None = None) -> TensorType:
        t = df.tensor_type(v)
        return TensorType(t.shape_tuple if shape is None else shape, dtype or t.dtype)

    # -- emission -----------------------------------------------------------------------
    def emit(self, op: Operation, hint: str | None = None) -> SSAValue:
        self.block.add_op(op)
        result = op.results[0]
        if hint or self.node is not None:
            result.name_hint = name_hint(hint or self.node.name)
        if self.node is not None:
            self.origins[op] = origin(self.node)
        return result

    def unsupported(self, what: str) -> UnsupportedOpError:
        node = self.node
        where = f" at {source_line(node)}" if node is not None else ""
        return UnsupportedOpError(f"unsupported {what}{where}")

    def value(self, arg) -> SSAValue:
        """The df value of an FX argument, materialising folded constants on first use."""
        if isinstance(arg, torch.fx.Node):
            if arg in self.values:
                v = self.values[arg]
                if isinstance(v, list):
                    raise self.unsupported(f"use of tuple value {arg.name}")
                return v
            if arg in self._materialized:
                return self._materialized[arg]
            if arg in self.params:
                name = self.params[arg]
                data = self.weights[name]
                t = TensorType(tuple(data.shape), self.storage(data.dtype))
                v = self.emit(df.WeightOp(name, "param", t), arg.name)
            elif arg in self.consts:
                v = self._constant(arg.name, self.consts[arg])
            else:
                raise self.unsupported(f"reference to {arg.name}")
            self._materialized[arg] = v
            return v
        raise self.unsupported(f"non-tensor operand {arg!r}")

    def _constant(self, name: str, data) -> SSAValue:
        if not isinstance(data, torch.Tensor):
            raise self.unsupported(f"constant {name} of type {type(data).__name__}")
        if data.dim() == 0 and data.dtype.is_floating_point:
            # on the meta device the value is unknown; such a model is only ever counted
            value = 0.0 if data.device.type == "meta" else float(data)
            return self.emit(df.ConstantOp(value, self.dtype), name)
        self.weights[name] = data
        t = TensorType(tuple(data.shape), self.storage(data.dtype))
        return self.emit(df.WeightOp(name, "constant", t), name)

    def scalar(self, x, like: SSAValue | None) -> SSAValue:
        """A Python number as a 0-d immediate in the dtype of its tensor partner."""
        dtype = df.tensor_type(like).dtype if like is not None else self.dtype
        return self.emit(df.ConstantOp(float(x), dtype), f"{self.node.name}_c")

    def operand(self, x, partner=None) -> SSAValue:
        if isinstance(x, torch.fx.Node):
            return self.value(x)
        if isinstance(x, bool | int | float):
            partner_v = self.value(partner) if isinstance(partner, torch.fx.Node) else None
            return self.scalar(x, partner_v)
        raise self.unsupported(f"operand {x!r}")

    def ew(self, kind: str, *args, type_: TensorType | None = None) -> SSAValue:
        """Elementwise `kind` over FX args / scalars / df values."""
        tensor_arg = next((a for a in args if isinstance(a, torch.fx.Node)), None)
        inputs = [a if isinstance(a, SSAValue) else self.operand(a, tensor_arg) for a in args]
        if type_ is None:
            shape = df.broadcast_shapes(*(df.tensor_type(v).shape_tuple for v in inputs))
            type_ = TensorType(shape, df.tensor_type(inputs[0]).dtype)
        return self.emit(df.ElementwiseOp(kind, inputs, type_))

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> Program:
        sig = self.ep.graph_signature
        if sig.buffers_to_mutate:
            raise UnsupportedOpError(
                "the model mutates a buffer in place (e.g. train-mode BatchNorm); compile it "
                "in eval mode without in-place state"
            )
        # an input written in place (a KV cache: cache[..., pos] = k) is, functionalized,
        # one more output holding its new value; torch.export puts these outputs first
        mutated = dict(getattr(sig, "user_inputs_to_mutate", None) or {})
        specs = {s.arg.name: s for s in sig.input_specs}
        state = self.ep.state_dict
        constants = self.ep.constants
        arg_types = []
        for node in self.ep.graph.nodes:
            self.node = node
            if node.op == "placeholder":
                spec = specs[node.name]
                if spec.kind == InputKind.USER_INPUT:
                    if not isinstance(node.meta.get("val"), torch.Tensor):
                        raise UnsupportedOpError(f"non-tensor model input {node.name}")
                    t = self.type_of(node)
                    arg = self.block.insert_arg(t, len(arg_types))
                    arg.name_hint = name_hint(node.name)
                    arg_types.append(t)
                    self.values[node] = arg
                    self.input_names.append(node.name)
                elif spec.kind == InputKind.PARAMETER:
                    self.params[node] = spec.target
                    self.weights[spec.target] = state[spec.target]
                elif spec.target in state:
                    self.consts[node] = state[spec.target]
                elif spec.target in constants:
                    self.consts[node] = constants[spec.target]
                else:
                    raise UnsupportedOpError(f"input {node.name} of kind {spec.kind.name}")
            elif node.op == "call_function":
                self.call(node)
            elif node.op == "output":
                self.node = None
                outs = [self._output(o) for o in node.args[0]]
                self.block.add_op(func.ReturnOp(*outs))
        self.node = None
        self._erase_dead()
        fn = func.FuncOp(
            "main",
            (arg_types, [df.tensor_type(v) for v in self.block.last_op.operands]),
            Region(self.block),
        )
        program = Program(ModuleOp([fn]), self.weights, self.input_names, self.dtype)
        program.origins = self.origins
        program.mutated_inputs = list(mutated.values())
        return program

    def _erase_dead(self) -> None:
        """Drop compute ops nobody reads (a view a functionalized in-place write left
        behind: it would otherwise count as one more reader of the tensor written)."""
        for op in reversed(list(self.block.ops)):
            if (
                isinstance(op, df.DfOp)
                and not isinstance(op, df.WeightOp | df.ConstantOp)
                and all(not r.uses for r in op.results)
            ):
                self.block.erase_op(op)

    def _output(self, out) -> SSAValue:
        if isinstance(out, torch.fx.Node):
            return self.value(out)
        raise UnsupportedOpError(f"model output {out!r} is not a tensor")

    def call(self, node: torch.fx.Node) -> None:
        target = node.target
        if target is operator.getitem:
            src, idx = node.args
            if src in self.consts:
                self.consts[node] = self.consts[src][idx]
            else:
                self.values[node] = self.values[src][idx]
            return
        if not isinstance(target, torch._ops.OpOverload):
            raise self.unsupported(f"call to {target}")
        name = target.overloadpacket.__name__
        if name in _DROPPED:
            return
        inputs = node.all_input_nodes
        if all(i in self.consts for i in inputs) or name in _SHAPE_ONLY:
            self.consts[node] = self._fold(node)
            return
        handler = aten_lowerings().get(name)
        if handler is None:
            raise self.unsupported(f"op aten.{name}")
        result = handler(self, node, bind(node))
        if result is not None:
            self.values[node] = result

    def _fold(self, node: torch.fx.Node):
        def sub(a):
            if isinstance(a, torch.fx.Node):
                return self.consts[a]
            if isinstance(a, list | tuple):
                return type(a)(sub(x) for x in a)
            return a

        if node.target.overloadpacket.__name__ in _SHAPE_ONLY:
            val = node.meta["val"]
            fill = {"zeros_like": 0, "ones_like": 1, "empty_like": 0}.get(
                node.target.overloadpacket.__name__
            )
            if fill is None:
                fill = bind(node)["fill_value"]
            return torch.full(tuple(val.shape), fill, dtype=val.dtype, device=val.device)
        with torch.no_grad():
            return node.target(*sub(node.args), **{k: sub(v) for k, v in node.kwargs.items()})


def bind(node: torch.fx.Node) -> dict:
    """The call's arguments by schema name, defaults filled in."""
    schema = node.target._schema
    bound = {}
    for i, a in enumerate(schema.arguments):
        if i < len(node.args):
            bound[a.name] = node.args[i]
        elif a.name in node.kwargs:
            bound[a.name] = node.kwargs[a.name]
        elif a.has_default_value():
            bound[a.name] = a.default_value
        else:
            bound[a.name] = None
    return bound


_DROPPED = frozenset(
    {"_assert_tensor_metadata", "_assert_async", "_assert_scalar", "sym_constrain_range"}
)
_SHAPE_ONLY = frozenset({"zeros_like", "ones_like", "empty_like", "full_like"})


def lower_program(program: ExportedProgram, dtype: str = "bf16") -> Program:
    """The df IR of an exported program; raises UnsupportedOpError with the source line."""
    return Lowering(program, dtype).run()
