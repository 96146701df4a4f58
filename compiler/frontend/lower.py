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

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from coec.ir import ops as df
from coec.ir.errors import UnsupportedOpError
from coec.ir.types import TensorType

_INT_DTYPES = {
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i32",
    torch.int8: "i8",
    torch.uint8: "i8",
    torch.bool: "i1",
}


@dataclass
class Program:
    """A model in df IR plus the data its ``df.weight`` ops name."""

    module: ModuleOp
    weights: dict[str, torch.Tensor]
    input_names: list[str]
    dtype: str
    source: str = "<module>"
    notes: list[str] = field(default_factory=list)
    #: under tensor parallelism, each socket's weights (``weights`` is then socket 0's)
    socket_weights: list[dict[str, torch.Tensor]] | None = None

    @property
    def func(self) -> func.FuncOp:
        return next(op for op in self.module.ops if isinstance(op, func.FuncOp))


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


def _hint(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


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
        val = node.meta["val"]
        return TensorType(tuple(int(d) for d in val.shape), self.storage(val.dtype))

    def like(self, v: SSAValue, shape=None, dtype: str | None = None) -> TensorType:
        t = df.tensor_type(v)
        return TensorType(t.shape_tuple if shape is None else shape, dtype or t.dtype)

    # -- emission -----------------------------------------------------------------------
    def emit(self, op: Operation, hint: str | None = None) -> SSAValue:
        self.block.add_op(op)
        result = op.results[0]
        if hint or self.node is not None:
            result.name_hint = _hint(hint or self.node.name)
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
        if sig.buffers_to_mutate or getattr(sig, "user_inputs_to_mutate", None):
            raise UnsupportedOpError(
                "the model mutates a buffer or input in place (e.g. a KV cache or "
                "train-mode BatchNorm); compile it in eval mode without in-place state"
            )
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
                    arg.name_hint = _hint(node.name)
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
        fn = func.FuncOp(
            "main",
            (arg_types, [df.tensor_type(v) for v in self.block.last_op.operands]),
            Region(self.block),
        )
        return Program(ModuleOp([fn]), self.weights, self.input_names, self.dtype)

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
        handler = LOWERINGS.get(name)
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

# -- lowerings, one per ATen op family ----------------------------------------------------
Handler = Callable[[Lowering, torch.fx.Node, dict], "SSAValue | list | None"]
LOWERINGS: dict[str, Handler] = {}


def lowers(*names: str):
    def register(fn: Handler) -> Handler:
        for n in names:
            LOWERINGS[n] = fn
        return fn

    return register


def _norm_dim(d: int, rank: int) -> int:
    return d % rank if rank else 0


@lowers("clone", "contiguous", "alias", "detach", "lift_fresh_copy", "dropout", "_to_copy")
@lowers("to", "type_as")
def _identity(lw: Lowering, node, a):
    x = lw.value(node.args[0])
    want = lw.type_of(node)
    if df.tensor_type(x).dtype == want.dtype:
        return x
    return lw.emit(df.ElementwiseOp("cast", [x], want))


_UNARY = {
    "relu": "relu",
    "silu": "silu",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "exp": "exp",
    "log": "log",
    "sqrt": "sqrt",
    "rsqrt": "rsqrt",
    "neg": "neg",
    "sin": "sin",
    "cos": "cos",
    "abs": "abs",
    "reciprocal": "reciprocal",
    "erf": "erf",
    "logical_not": "logical_not",
    "bitwise_not": "logical_not",
}


@lowers(*_UNARY)
def _unary(lw: Lowering, node, a):
    return lw.ew(_UNARY[node.target.overloadpacket.__name__], node.args[0], type_=lw.type_of(node))


@lowers("gelu")
def _gelu(lw: Lowering, node, a):
    kind = "gelu_tanh" if a["approximate"] == "tanh" else "gelu"
    return lw.ew(kind, a["self"], type_=lw.type_of(node))


_BINARY = {
    "mul": "mul",
    "div": "div",
    "pow": "pow",
    "maximum": "maximum",
    "minimum": "minimum",
    "eq": "eq",
    "ne": "ne",
    "lt": "lt",
    "le": "le",
    "gt": "gt",
    "ge": "ge",
    "logical_and": "logical_and",
    "logical_or": "logical_or",
    "bitwise_and": "logical_and",
    "bitwise_or": "logical_or",
}


@lowers(*_BINARY)
def _binary(lw: Lowering, node, a):
    name = node.target.overloadpacket.__name__
    if name == "div" and a.get("rounding_mode") is not None:
        raise lw.unsupported(f"aten.div with rounding_mode={a['rounding_mode']!r}")
    if name.startswith("bitwise") and node.meta["val"].dtype != torch.bool:
        raise lw.unsupported(f"aten.{name} on integers")
    x, y = node.args[0], node.args[1]
    return lw.ew(_BINARY[name], x, y, type_=lw.type_of(node))


@lowers("add", "sub", "rsub")
def _add_sub(lw: Lowering, node, a):
    name = node.target.overloadpacket.__name__
    x, y, alpha = a["self"], a["other"], a.get("alpha", 1)
    if alpha != 1:
        y = lw.ew("mul", y, alpha) if isinstance(y, torch.fx.Node) else y * alpha
    kind = "add" if name == "add" else "sub"
    if name == "rsub":
        x, y = y, x
    return lw.ew(kind, x, y, type_=lw.type_of(node))


@lowers("where")
def _where(lw: Lowering, node, a):
    return lw.ew("where", a["condition"], a["self"], a["other"], type_=lw.type_of(node))


@lowers("masked_fill")
def _masked_fill(lw: Lowering, node, a):
    return lw.ew("where", a["mask"], a["value"], a["self"], type_=lw.type_of(node))


@lowers("clamp", "clamp_min", "clamp_max")
def _clamp(lw: Lowering, node, a):
    x = lw.value(a["self"])
    if a.get("min") is not None:
        x = lw.ew("maximum", x, lw.scalar(a["min"], x))
    if a.get("max") is not None:
        x = lw.ew("minimum", x, lw.scalar(a["max"], x))
    return x


@lowers("hardtanh")
def _hardtanh(lw: Lowering, node, a):
    """``clamp(x, min_val, max_val)`` (ReLU6 is hardtanh(0, 6))."""
    x = lw.value(a["self"])
    x = lw.ew("maximum", x, lw.scalar(a["min_val"], x))
    return lw.ew("minimum", x, lw.scalar(a["max_val"], x))


@lowers("leaky_relu")
def _leaky_relu(lw: Lowering, node, a):
    x = lw.value(a["self"])
    negative = lw.ew("mul", x, lw.scalar(a["negative_slope"], x))
    return (
        lw.ew("maximum", x, negative) if a["negative_slope"] <= 1 else lw.ew("minimum", x, negative)
    )


@lowers("hardsigmoid", "hardswish")
def _hard_gates(lw: Lowering, node, a):
    """``relu6(x + 3) / 6``, times ``x`` for hardswish (MobileNetV3)."""
    x = lw.value(a["self"])
    gate = lw.ew("add", x, lw.scalar(3.0, x))
    gate = lw.ew("minimum", lw.ew("maximum", gate, lw.scalar(0.0, x)), lw.scalar(6.0, x))
    gate = lw.ew("div", gate, lw.scalar(6.0, x))
    return lw.ew("mul", x, gate) if node.target.overloadpacket.__name__ == "hardswish" else gate


# -- matmuls -------------------------------------------------------------------------------
@lowers("linear")
def _linear(lw: Lowering, node, a):
    out = lw.type_of(node)
    y = lw.emit(df.MatmulOp(lw.value(a["input"]), lw.value(a["weight"]), True, out))
    if a["bias"] is None:
        return y
    return lw.ew("add", y, lw.value(a["bias"]), type_=out)


@lowers("mm", "bmm", "matmul")
def _matmul(lw: Lowering, node, a):
    x, w = lw.value(node.args[0]), lw.value(node.args[1])
    if len(df.tensor_type(x).shape_tuple) < 2 or len(df.tensor_type(w).shape_tuple) < 2:
        raise lw.unsupported("matmul of a 1-d tensor")
    return lw.emit(df.MatmulOp(x, w, False, lw.type_of(node)))


@lowers("addmm")
def _addmm(lw: Lowering, node, a):
    out = lw.type_of(node)
    y: SSAValue = lw.emit(df.MatmulOp(lw.value(a["mat1"]), lw.value(a["mat2"]), False, out))
    if a["alpha"] != 1:
        y = lw.ew("mul", y, lw.scalar(a["alpha"], y), type_=out)
    bias = lw.value(a["self"])
    if a["beta"] != 1:
        bias = lw.ew("mul", bias, lw.scalar(a["beta"], bias))
    return lw.ew("add", y, bias, type_=out)


# -- reductions and composites ---------------------------------------------------------------
_REDUCE = {"sum": "sum", "mean": "mean", "amax": "max", "amin": "min", "prod": "prod"}


@lowers(*_REDUCE)
def _reduce(lw: Lowering, node, a):
    x = lw.value(a["self"])
    rank = len(df.tensor_type(x).shape_tuple)
    dims = a.get("dim")
    if dims is None or dims == []:
        dims = list(range(rank))
    elif isinstance(dims, int):
        dims = [dims]
    axes = sorted(_norm_dim(d, rank) for d in dims)
    keep = bool(a.get("keepdim", False))
    kind = _REDUCE[node.target.overloadpacket.__name__]
    return lw.emit(df.ReduceOp(kind, x, axes, keep, lw.type_of(node)))


@lowers("softmax", "_softmax", "log_softmax", "_log_softmax")
def _softmax(lw: Lowering, node, a):
    x = lw.value(a["self"])
    axis = _norm_dim(a["dim"], len(df.tensor_type(x).shape_tuple))
    log = "log" in node.target.overloadpacket.__name__
    return lw.emit(df.SoftmaxOp(x, axis, log, lw.type_of(node)))


@lowers("layer_norm")
def _layer_norm(lw: Lowering, node, a):
    w = lw.value(a["weight"]) if a["weight"] is not None else None
    b = lw.value(a["bias"]) if a["bias"] is not None else None
    nd = len(a["normalized_shape"])
    return lw.emit(df.LayerNormOp(lw.value(a["input"]), w, b, nd, a["eps"], lw.type_of(node)))


@lowers("rms_norm")
def _rms_norm(lw: Lowering, node, a):
    w = lw.value(a["weight"]) if a["weight"] is not None else None
    eps = a["eps"] if a["eps"] is not None else torch.finfo(node.meta["val"].dtype).eps
    nd = len(a["normalized_shape"])
    return lw.emit(df.RMSNormOp(lw.value(a["input"]), w, nd, eps, lw.type_of(node)))


@lowers("scaled_dot_product_attention")
def _sdpa(lw: Lowering, node, a):
    if a["dropout_p"]:
        raise lw.unsupported("attention dropout (compile in eval mode)")
    q, k, v = (lw.value(a[n]) for n in ("query", "key", "value"))
    e = df.tensor_type(q).shape_tuple[-1]
    scale = a["scale"] if a["scale"] is not None else 1.0 / math.sqrt(e)
    mask = lw.value(a["attn_mask"]) if a["attn_mask"] is not None else None
    return lw.emit(df.AttentionOp(q, k, v, mask, scale, bool(a["is_causal"]), lw.type_of(node)))


# -- movement ---------------------------------------------------------------------------------
@lowers("view", "_unsafe_view", "reshape", "unsqueeze", "squeeze", "flatten", "unflatten")
@lowers("view_as")
def _reshape(lw: Lowering, node, a):
    x, out = lw.value(node.args[0]), lw.type_of(node)
    if df.tensor_type(x).shape_tuple == out.shape_tuple:
        return x
    return lw.emit(df.ReshapeOp(x, out))


@lowers("permute", "transpose", "t")
def _permute(lw: Lowering, node, a):
    x = lw.value(node.args[0])
    rank = len(df.tensor_type(x).shape_tuple)
    name = node.target.overloadpacket.__name__
    if name == "permute":
        perm = [_norm_dim(d, rank) for d in a["dims"]]
    elif name == "transpose":
        perm = list(range(rank))
        i, j = _norm_dim(a["dim0"], rank), _norm_dim(a["dim1"], rank)
        perm[i], perm[j] = perm[j], perm[i]
    else:
        perm = list(reversed(range(rank)))
    if perm == list(range(rank)):
        return x
    return lw.emit(df.PermuteOp(x, perm, lw.type_of(node)))


@lowers("expand", "expand_copy", "broadcast_to")
def _expand(lw: Lowering, node, a):
    x, out = lw.value(node.args[0]), lw.type_of(node)
    if df.tensor_type(x).shape_tuple == out.shape_tuple:
        return x
    return lw.emit(df.BroadcastOp(x, out))


def _slice(lw: Lowering, x: SSAValue, axis: int, start, end, step: int, hint=None) -> SSAValue:
    shape = list(df.tensor_type(x).shape_tuple)
    start, end, step = slice(start, end, step).indices(shape[axis])
    if (start, end, step) == (0, shape[axis], 1):
        return x
    shape[axis] = len(range(start, end, step))
    return lw.emit(df.SliceOp(x, axis, start, end, step, lw.like(x, shape)), hint)


@lowers("slice")
def _slice_op(lw: Lowering, node, a):
    x = lw.value(a["self"])
    axis = _norm_dim(a["dim"], len(df.tensor_type(x).shape_tuple))
    return _slice(lw, x, axis, a["start"], a["end"], a["step"])


@lowers("select")
def _select(lw: Lowering, node, a):
    x = lw.value(a["self"])
    shape = df.tensor_type(x).shape_tuple
    axis = _norm_dim(a["dim"], len(shape))
    idx = a["index"] % shape[axis]
    s = _slice(lw, x, axis, idx, idx + 1, 1, f"{node.name}_slice")
    return lw.emit(df.ReshapeOp(s, lw.type_of(node)))


@lowers("split_with_sizes", "split")
def _split(lw: Lowering, node, a):
    x = lw.value(a["self"])
    shape = df.tensor_type(x).shape_tuple
    axis = _norm_dim(a["dim"], len(shape))
    sizes = a.get("split_sizes") or a.get("split_size")
    if isinstance(sizes, int):
        sizes = [sizes] * (shape[axis] // sizes) + (
            [shape[axis] % sizes] if shape[axis] % sizes else []
        )
    outs, start = [], 0
    for i, n in enumerate(sizes):
        outs.append(_slice(lw, x, axis, start, start + n, 1, f"{node.name}_{i}"))
        start += n
    return outs


@lowers("cat", "concat")
def _cat(lw: Lowering, node, a):
    tensors = [t for t in a["tensors"] if t.meta["val"].numel() > 0]
    out = lw.type_of(node)
    xs = [lw.value(t) for t in tensors]
    if len(xs) == 1:
        return xs[0]
    return lw.emit(df.ConcatOp(xs, _norm_dim(a["dim"], len(out.shape_tuple)), out))


@lowers("embedding")
def _embedding(lw: Lowering, node, a):
    return lw.emit(df.GatherOp(lw.value(a["weight"]), lw.value(a["indices"]), 0, lw.type_of(node)))


@lowers("index_select")
def _index_select(lw: Lowering, node, a):
    x = lw.value(a["self"])
    axis = _norm_dim(a["dim"], len(df.tensor_type(x).shape_tuple))
    return lw.emit(df.GatherOp(x, lw.value(a["index"]), axis, lw.type_of(node)))


@lowers("index")
def _index(lw: Lowering, node, a):
    idx = a["indices"]
    present = [i for i, t in enumerate(idx) if t is not None]
    if len(present) == 1:
        axis = present[0]
        return lw.emit(
            df.GatherOp(lw.value(a["self"]), lw.value(idx[axis]), axis, lw.type_of(node))
        )
    return _multi_index(lw, node, lw.value(a["self"]), idx, present)


def _multi_index(lw: Lowering, node, x: SSAValue, idx: list, present: list[int]) -> SSAValue:
    """``x[i0, i1, ...]`` with several index tensors as one gather on a flattened axis.

    The indexed dims are brought together (moved to the front when they are not
    adjacent, as torch then puts the broadcast index dims first), merged into one
    axis, and the index tensors combined into row-major flat indices. Constant
    indices (masks built from ``arange``, as HF models do) fold at compile time.
    """
    shape = list(df.tensor_type(x).shape_tuple)
    rank = len(shape)
    if any(
        isinstance(idx[i], torch.fx.Node) and idx[i].meta["val"].dtype == torch.bool
        for i in present
    ):
        raise lw.unsupported("boolean-mask indexing (aten.index) with several index tensors")
    nodes = [idx[d] for d in present]
    adjacent = present == list(range(present[0], present[-1] + 1))
    if not adjacent:
        perm = present + [d for d in range(rank) if d not in present]
        x = lw.emit(
            df.PermuteOp(x, perm, lw.like(x, [shape[d] for d in perm])), f"{node.name}_perm"
        )
        shape, present = [shape[d] for d in perm], list(range(len(present)))
    first, sizes = present[0], [shape[d] for d in present]
    merged = shape[:first] + [math.prod(sizes)] + shape[present[-1] + 1 :]
    table = lw.emit(df.ReshapeOp(x, lw.like(x, merged)), f"{node.name}_flat")
    strides = [math.prod(sizes[k + 1 :]) for k in range(len(sizes))]
    if all(n in lw.consts for n in nodes):
        flat = sum(
            (lw.consts[n].to(torch.int64) % size) * stride
            for n, size, stride in zip(nodes, sizes, strides, strict=True)
        )
        index = lw._constant(f"{node.name}_index", flat)
    else:
        index = None
        for n, size, stride in zip(nodes, sizes, strides, strict=True):
            i = lw.value(n)
            t = df.tensor_type(i)
            negative = lw.ew("lt", i, lw.scalar(0, i), type_=lw.like(i, dtype="i1"))
            i = lw.ew("where", negative, lw.ew("add", i, lw.scalar(size, i)), i, type_=t)
            term = lw.ew("mul", i, lw.scalar(stride, i)) if stride != 1 else i
            index = term if index is None else lw.ew("add", index, term)
    return lw.emit(df.GatherOp(table, index, first, lw.type_of(node)))


@lowers("linalg_vector_norm")
def _vector_norm(lw: Lowering, node, a):
    """``‖x‖_p`` over ``dim``: sqrt(sum x²) for p=2 (F.normalize's case), sum|x|, max|x|, or the p-th root."""
    x = lw.value(a["self"])
    rank = len(df.tensor_type(x).shape_tuple)
    dims = a["dim"]
    axes = (
        list(range(rank))
        if dims is None or dims == []
        else sorted(_norm_dim(d, rank) for d in dims)
    )
    keep, out, p = bool(a["keepdim"]), lw.type_of(node), float(a["ord"])
    if p == 0:
        raise lw.unsupported("aten.linalg_vector_norm with ord=0 (a count, not a norm)")
    reduced = lw.like(x, out.shape_tuple)
    if p == 2:
        summed = lw.emit(df.ReduceOp("sum", lw.ew("mul", x, x), axes, keep, reduced))
        return lw.ew("sqrt", summed, type_=out)
    absolute = lw.ew("abs", x)
    if math.isinf(p):
        return lw.emit(df.ReduceOp("max" if p > 0 else "min", absolute, axes, keep, out))
    if p == 1:
        return lw.emit(df.ReduceOp("sum", absolute, axes, keep, out))
    powered = lw.ew("pow", absolute, lw.scalar(p, absolute))
    summed = lw.emit(df.ReduceOp("sum", powered, axes, keep, reduced))
    return lw.ew("pow", summed, lw.scalar(1.0 / p, summed), type_=out)


@lowers("all_reduce")
def _all_reduce(lw: Lowering, node, a):
    return lw.emit(df.AllReduceOp(lw.value(node.args[0]), lw.type_of(node)))


@lowers("all_gather")
def _all_gather(lw: Lowering, node, a):
    out = lw.type_of(node)
    axis = _norm_dim(a["dim"], len(out.shape_tuple))
    return lw.emit(df.AllGatherOp(lw.value(a["x"]), axis, out))


def lower_program(program: ExportedProgram, dtype: str = "bf16") -> Program:
    """The df IR of an exported program; raises UnsupportedOpError with the source line."""
    return Lowering(program, dtype).run()


# the spatial ops (convolution, pooling, batch norm, cumsum) register themselves on import
from coec.frontend import lower_spatial as _spatial  # noqa: E402, F401
