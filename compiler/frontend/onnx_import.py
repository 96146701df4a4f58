"""Import an ONNX graph into the df dialect: coec's second frontend.

The walk is ``coec.frontend.lower``'s: one pass over the nodes in graph order, one
handler per ONNX op type (``ONNX_LOWERINGS``), building the same df ops. The rules:

- **shapes are static**: the graph inputs' shapes are fixed (from the model or from
  the data it will run on) and ``onnx.shape_inference`` runs first; each handler
  computes its result's shape from the df types, and the result is checked against
  what shape inference says;
- **constant folding**: a node whose inputs are all known at import time
  (initializers, ``Constant``, the ``Shape`` of a static tensor and whatever is
  computed from them: ``Gather``/``Unsqueeze``/``Concat`` on shapes,
  ``ConstantOfShape``, ``Range``...) is evaluated by onnx's NumPy reference
  implementation and never enters the IR. A known tensor becomes IR only where a
  computed op uses it: a one-element number as a ``df.constant`` immediate, anything
  else as a ``df.weight`` (kind ``param`` for initializers, ``constant`` for folded);
- **storage dtype**: floating tensors are stored in the chosen dtype (bf16 by
  default), integer and bool tensors keep theirs, as in the ATen lowering.

The handlers live in ``coec.frontend.onnx_ops``. An ONNX op without a handler is one ``UnsupportedOpError`` line naming the op type
and the node.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region, SSAValue

from coec.frontend.common import Program, name_hint
from coec.frontend.onnx_ops import op_key
from coec.frontend.registry import onnx_lowerings
from coec.ir import ops as df
from coec.ir.errors import ConfigError, UnsupportedOpError, VerifyError
from coec.ir.types import TensorType

#: stored in the chosen float dtype (the 8- and 4-bit floats too: a cast rounds to them)
_FLOAT_TYPES = {
    TensorProto.FLOAT,
    TensorProto.FLOAT16,
    TensorProto.BFLOAT16,
    TensorProto.DOUBLE,
    TensorProto.FLOAT8E4M3FN,
    TensorProto.FLOAT8E4M3FNUZ,
    TensorProto.FLOAT8E5M2,
    TensorProto.FLOAT8E5M2FNUZ,
    TensorProto.FLOAT4E2M1,
}
_INT_TYPES = {
    TensorProto.INT64: "i64",
    TensorProto.INT32: "i32",
    TensorProto.INT16: "i16",
    TensorProto.INT8: "i8",
    TensorProto.UINT64: "u64",
    TensorProto.UINT32: "u32",
    TensorProto.UINT16: "u16",
    TensorProto.UINT8: "u8",
    TensorProto.INT4: "i8",  # 4- and 2-bit integers in a byte
    TensorProto.UINT4: "u8",
    TensorProto.INT2: "i8",
    TensorProto.UINT2: "u8",
    TensorProto.BOOL: "i1",
}
_NP_INT = {
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "uint64": "u64",
    "uint32": "u32",
    "uint16": "u16",
    "uint8": "u8",
    "int4": "i8",
    "uint4": "u8",
    "int2": "i8",
    "uint2": "u8",
}
#: ops whose result is not a function of their inputs: never folded
_RANDOM = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Bernoulli"}
)


def _hint(name: str) -> str:
    """An IR name hint for an ONNX value name ('7', 'input.1' and '/a/b' are valid ONNX)."""
    hint = name_hint(name)
    return hint if hint[:1].isalpha() or hint[:1] == "_" else f"v{hint}"


class OnnxImport:
    """State of one import: ONNX value name -> df value or folded NumPy array."""

    def __init__(self, model: onnx.ModelProto, dtype: str, source: str):
        self.model, self.graph, self.dtype, self.source = model, model.graph, dtype, source
        self.opsets = {
            ("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import
        }
        self.opset = self.opsets.get("", 1)
        self.block = Block()
        self.values: dict[str, SSAValue] = {}
        self.consts: dict[str, np.ndarray] = {}
        self.initializers: set[str] = set()
        self.weights: dict[str, torch.Tensor] = {}
        self.input_names: list[str] = []
        self._materialized: dict[str, SSAValue] = {}
        self.types: dict[str, onnx.TypeProto] = {}
        for vi in (*model.graph.input, *model.graph.value_info, *model.graph.output):
            self.types[vi.name] = vi.type
        self.node: onnx.NodeProto | None = None
        self.index = 0
        #: whether results are still checked against ONNX shape inference (see ``call``)
        self.check_shapes = True

    # -- messages ----------------------------------------------------------------------
    def where(self) -> str:
        node = self.node
        if node is None:
            return "graph"
        if node.name:
            return f"node {node.name!r}"
        out = next((o for o in node.output if o), "")
        return f"node #{self.index} (output {out!r})"

    def op_label(self) -> str:
        if self.node is None:
            return f"{self.source}"
        return f"ONNX {op_key(self.node)} ({self.where()})"

    def unsupported(self, what: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.op_label()}: {what} is not supported by coec")

    # -- types ---------------------------------------------------------------------------
    def storage(self, elem_type: int) -> str:
        if elem_type in _FLOAT_TYPES:
            return self.dtype
        if elem_type in _INT_TYPES:
            return _INT_TYPES[elem_type]
        raise self.unsupported(f"dtype {TensorProto.DataType.Name(elem_type)}")

    def np_storage(self, arr: np.ndarray) -> str:
        if arr.dtype.kind == "f" or arr.dtype.name.startswith(("bfloat", "float")):
            return self.dtype  # ml_dtypes' bfloat16 and 8- / 4-bit floats too
        if arr.dtype.kind == "b":
            return "i1"
        if arr.dtype.name in _NP_INT:
            return _NP_INT[arr.dtype.name]
        raise self.unsupported(f"constant of dtype {arr.dtype}")

    def out_dtype(self, k: int = 0) -> str:
        """The storage dtype of the node's k-th output: ONNX's type inference, else
        (ops it does not know, e.g. other domains) the first input's."""
        t = self.types.get(self.node.output[k])
        if t is not None and t.HasField("tensor_type") and t.tensor_type.elem_type:
            return self.storage(t.tensor_type.elem_type)
        first = next(n for n in self.node.input if n)
        if first in self.values:
            return self.dtype_of(self.values[first])
        return self.np_storage(self.consts[first])

    def elem_type(self, name: str) -> int:
        """The ONNX element type of a value (0 when type inference does not know it)."""
        if name in self.consts:
            return helper.np_dtype_to_tensor_dtype(self.consts[name].dtype)
        t = self.types.get(name)
        return t.tensor_type.elem_type if t is not None and t.HasField("tensor_type") else 0

    def inferred_shape(self, name: str) -> tuple[int, ...] | None:
        t = self.types.get(name)
        if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
            return None
        dims = t.tensor_type.shape.dim
        if not all(d.HasField("dim_value") for d in dims):
            return None
        return tuple(d.dim_value for d in dims)

    def shape(self, name_or_value: str | SSAValue) -> tuple[int, ...]:
        if isinstance(name_or_value, SSAValue):
            return df.tensor_type(name_or_value).shape_tuple
        if name_or_value in self.consts:
            return tuple(self.consts[name_or_value].shape)
        return df.tensor_type(self.value(name_or_value)).shape_tuple

    def axis(self, axis: int, rank: int) -> int:
        """``axis`` counted from 0 (ONNX allows negative axes)."""
        if not -max(rank, 1) <= axis < max(rank, 1):
            raise VerifyError(f"{self.op_label()}: axis {axis} is out of range for rank {rank}")
        return axis % rank if rank else 0

    def dtype_of(self, v: SSAValue) -> str:
        return df.tensor_type(v).dtype

    # -- attributes and inputs -------------------------------------------------------------
    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                value = helper.get_attribute_value(a)
                return value.decode() if isinstance(value, bytes) else value
        return default

    def has_input(self, k: int) -> bool:
        return len(self.node.input) > k and bool(self.node.input[k])

    def const(self, k: int, what: str) -> np.ndarray:
        """Input k's value, which must be known at import time."""
        name = self.node.input[k]
        if name not in self.consts:
            raise self.unsupported(f"{what} computed at run time")
        return self.consts[name]

    def const_ints(self, k: int, attr: str, what: str) -> list[int] | None:
        """An int list given as attribute ``attr`` (older opsets) or as input k (newer)."""
        value = self.attr(attr)
        if value is not None:
            return [int(v) for v in value]
        if self.has_input(k):
            return [int(v) for v in np.asarray(self.const(k, what)).reshape(-1)]
        return None

    # -- emission ------------------------------------------------------------------------------
    def emit(self, op: Operation, hint: str | None = None) -> SSAValue:
        self.block.add_op(op)
        result = op.results[0]
        name = hint or (self.node.output[0] if self.node is not None else None)
        if name:
            result.name_hint = _hint(name)
        return result

    def like(self, v: SSAValue, shape=None, dtype: str | None = None) -> TensorType:
        t = df.tensor_type(v)
        return TensorType(t.shape_tuple if shape is None else shape, dtype or t.dtype)

    def value(self, name: str) -> SSAValue:
        """The df value of an ONNX tensor, materialising a known tensor on first use."""
        if name in self.values:
            return self.values[name]
        if name in self._materialized:
            return self._materialized[name]
        if name not in self.consts:
            raise self.unsupported(f"a use of {name!r} before it is defined")
        kind = "param" if name in self.initializers else "constant"
        v = self.constant(self.consts[name], name, kind)
        self._materialized[name] = v
        return v

    def constant(self, arr: np.ndarray, name: str, kind: str = "constant") -> SSAValue:
        """A known tensor in the IR: a 0-d float immediate, else a named df.weight."""
        arr = np.asarray(arr)
        dtype = self.np_storage(arr)
        if arr.ndim == 0 and arr.dtype.kind == "f":
            return self.emit(df.ConstantOp(float(arr), dtype), name)
        if dtype == self.dtype and arr.dtype not in (np.float16, np.float64):
            arr = arr.astype(np.float32)  # bfloat16 and float8 have no torch.from_numpy
        elif arr.dtype.kind == "V":  # ml_dtypes' 4- and 2-bit integers: a byte each
            arr = arr.astype(np.int8 if dtype == "i8" else np.uint8)
        key, i = name, 1
        while key in self.weights:
            key, i = f"{name}_{i}", i + 1
        self.weights[key] = torch.from_numpy(np.array(arr, order="C", copy=True))
        return self.emit(df.WeightOp(key, kind, TensorType(arr.shape, dtype)), key)

    def scalar(self, x: float, dtype: str) -> SSAValue:
        return self.emit(df.ConstantOp(float(x), dtype), f"{self.node.output[0]}_c")

    def ew(self, kind: str, inputs: Sequence[str | SSAValue], dtype: str | None = None):
        """Elementwise ``kind`` over ONNX names and df values (NumPy broadcasting).

        A known one-element number becomes a ``df.constant`` immediate when that does
        not change the result's shape, as ``x * 0.5`` does in the ATen lowering.
        """
        shapes = [self.shape(a) for a in inputs]
        out = df.broadcast_shapes(*shapes)
        scalar = [
            isinstance(a, str)
            and a in self.consts
            and a not in self.values
            and self.consts[a].size == 1
            and self.consts[a].dtype.kind in "fiu"
            for a in inputs
        ]
        kept = [s for s, sc in zip(shapes, scalar, strict=True) if not sc]
        if not kept or df.broadcast_shapes(*kept) != out:
            scalar = [False] * len(inputs)
        values = []
        for a, sc in zip(inputs, scalar, strict=True):
            if sc:
                arr = self.consts[a]
                values.append(self.scalar(arr.reshape(()).item(), self.np_storage(arr)))
            else:
                values.append(a if isinstance(a, SSAValue) else self.value(a))
        if dtype is None:
            dtypes = [self.dtype_of(v) for v in values]
            dtype = next((d for d in dtypes if d != "i1"), dtypes[0])
        return self.emit(df.ElementwiseOp(kind, values, TensorType(out, dtype)))

    def reshape(self, x: SSAValue, shape: Sequence[int], hint: str | None = None) -> SSAValue:
        if self.shape(x) == tuple(shape):
            return x
        return self.emit(df.ReshapeOp(x, self.like(x, tuple(shape))), hint)

    def permute(self, x: SSAValue, perm: Sequence[int], hint: str | None = None) -> SSAValue:
        if list(perm) == list(range(len(perm))):
            return x
        shape = self.shape(x)
        out = self.like(x, [shape[p] for p in perm])
        return self.emit(df.PermuteOp(x, list(perm), out), hint)

    # -- the walk --------------------------------------------------------------------------------
    def run(self) -> Program:
        graph = self.graph
        if graph.sparse_initializer:
            raise UnsupportedOpError(f"{self.source}: sparse initializers are not supported")
        for init in graph.initializer:
            self.consts[init.name] = numpy_helper.to_array(init)
            self.initializers.add(init.name)
        arg_types = []
        for inp in graph.input:
            if inp.name in self.consts:  # an initializer listed as an input (IR < 4)
                continue
            tt = inp.type.tensor_type
            shape = self.inferred_shape(inp.name)
            if not inp.type.HasField("tensor_type") or shape is None:
                raise ConfigError(f"{self.source}: input {inp.name!r} has no static tensor shape")
            if tt.elem_type not in _FLOAT_TYPES and tt.elem_type not in _INT_TYPES:
                raise UnsupportedOpError(
                    f"{self.source}: input {inp.name!r} has dtype "
                    f"{TensorProto.DataType.Name(tt.elem_type)}, which coec does not support"
                )
            t = TensorType(shape, self.storage(tt.elem_type))
            arg = self.block.insert_arg(t, len(arg_types))
            arg.name_hint = _hint(inp.name)
            arg_types.append(t)
            self.values[inp.name] = arg
            self.input_names.append(inp.name)
        for index, node in enumerate(graph.node):
            self.node, self.index = node, index
            self.call(node)
        self.node = None
        outs = [self.value(o.name) for o in graph.output]
        self.block.add_op(func.ReturnOp(*outs))
        fn = func.FuncOp("main", (arg_types, [df.tensor_type(v) for v in outs]), Region(self.block))
        return Program(ModuleOp([fn]), self.weights, self.input_names, self.dtype, self.source)

    def call(self, node: onnx.NodeProto) -> None:
        key = op_key(node)
        if key in _RANDOM:
            raise UnsupportedOpError(f"ONNX op {key} ({self.where()}) is not supported by coec")
        handler = onnx_lowerings().get(key)
        if all(n in self.consts for n in node.input if n):
            folded = self.fold(node, quiet=handler is not None)
            if folded is not None:
                for name, arr in zip(node.output, folded, strict=False):
                    if name:
                        self.consts[name] = np.asarray(arr)
                return
        if handler is None:
            raise UnsupportedOpError(f"ONNX op {key} ({self.where()}) is not supported by coec")
        result = handler(self, node)
        results = result if isinstance(result, list) else [result]
        for k, name in enumerate(node.output):
            if not name:
                continue
            if k >= len(results):
                raise self.unsupported(f"output {k} ({name!r})")
            r = results[k]
            if isinstance(r, np.ndarray):
                self.consts[name] = r
                continue
            self.values[name] = r
            want, got = self.inferred_shape(name), self.shape(r)
            if want is not None and want != got and _ceil_pool(node):
                # onnx's shape inference keeps a last ceil-mode window that starts in the
                # right pad; its reference implementation, onnxruntime and PyTorch drop it,
                # as coec does. Shapes inferred downstream derive from it: stop checking.
                self.check_shapes = False
            if want is not None and want != got and self.check_shapes:
                raise VerifyError(
                    f"{self.op_label()}: coec computes shape {got} for {name!r}, "
                    f"ONNX shape inference {want}"
                )

    def fold(self, node: onnx.NodeProto, quiet: bool) -> list[np.ndarray] | None:
        """Evaluate a node on known inputs with onnx's reference implementation."""
        from onnx.reference import ReferenceEvaluator

        feeds = {n: self.consts[n] for n in node.input if n}
        try:
            if op_key(node) in _FOLDS:
                return _FOLDS[op_key(node)](self, [self.consts[n] for n in node.input])
            # the evaluator prints "Evaluation failed" before raising: keep stdout clean
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                evaluator = ReferenceEvaluator(node, opsets=dict(self.opsets) or {"": self.opset})
                return evaluator.run(None, feeds)
        except Exception as e:
            if quiet:  # a handler can still compute it at run time
                return None
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UnsupportedOpError(
                f"ONNX op {op_key(node)} ({self.where()}) is not supported by coec "
                f"(constant folding failed: {first})"
            ) from e


def _ceil_pool(node: onnx.NodeProto) -> bool:
    ceil = any(a.name == "ceil_mode" and a.i for a in node.attribute)
    return ceil and node.op_type in ("MaxPool", "AveragePool")


#: NumPy folds for ops whose reference implementation fails on valid inputs
#: (onnx 1.23's GatherElements reshapes its result wrongly when indices are smaller than data)
_FOLDS = {
    "GatherElements": lambda imp, xs: [
        np.take_along_axis(xs[0], xs[1].astype(np.int64), axis=imp.attr("axis", 0))
    ],
}


# -- the front door ---------------------------------------------------------------------------
def _not_a_tensor(inp: onnx.ValueInfoProto, source: str) -> UnsupportedOpError:
    kind = (inp.type.WhichOneof("value") or "untyped value").removesuffix("_type")
    article = "an" if kind[0] in "aeiou" else "a"
    return UnsupportedOpError(
        f"{source}: input {inp.name!r} is {article} {kind}, not a tensor "
        "(coec compiles tensor graphs)"
    )


def fix_input_shapes(
    model: onnx.ModelProto, shapes: dict[str, Sequence[int]], source: str = "<onnx>"
) -> None:
    """Give the graph inputs named in ``shapes`` those static shapes (in place)."""
    for inp in model.graph.input:
        if inp.name not in shapes:
            continue
        if not inp.type.HasField("tensor_type"):
            raise _not_a_tensor(inp, source)
        want = [int(d) for d in shapes[inp.name]]
        dims = inp.type.tensor_type.shape.dim
        has_shape = inp.type.tensor_type.HasField("shape")
        if has_shape and len(dims) != len(want):
            raise ConfigError(
                f"input {inp.name!r}: data of shape {tuple(want)} for a model input of rank {len(dims)}"
            )
        for d, w in zip(dims, want, strict=False):
            if d.HasField("dim_value") and d.dim_value != w:
                raise ConfigError(
                    f"input {inp.name!r}: data of shape {tuple(want)}, the model wants "
                    f"{[x.dim_value if x.HasField('dim_value') else x.dim_param for x in dims]}"
                )
        inp.type.tensor_type.shape.Clear()
        for w in want:
            inp.type.tensor_type.shape.dim.add().dim_value = w


def fix_input_values(model: onnx.ModelProto, constants: dict[str, np.ndarray]) -> None:
    """Make the graph inputs named in ``constants`` initializers of those values (in place)."""
    inputs = {i.name: i for i in model.graph.input}
    initializers = {i.name for i in model.graph.initializer}
    for name, value in constants.items():
        if name not in inputs or name in initializers:
            raise ConfigError(f"constants: the model has no graph input {name!r}")
        tt = inputs[name].type.tensor_type
        arr = np.asarray(value)
        if tt.elem_type:
            arr = arr.astype(helper.tensor_dtype_to_np_dtype(tt.elem_type), copy=False)
        model.graph.initializer.append(numpy_helper.from_array(arr, name))
        model.graph.input.remove(inputs[name])


def import_onnx(
    model: onnx.ModelProto,
    dtype: str = "bf16",
    input_shapes: dict[str, Sequence[int]] | None = None,
    source: str = "<onnx>",
    constants: dict[str, np.ndarray] | None = None,
) -> Program:
    """The df IR of an ONNX model; raises UnsupportedOpError naming the op type and node.

    ``input_shapes`` fixes graph inputs' shapes (required for symbolic dims);
    ``constants`` fixes graph inputs' values (they become initializers, no longer
    inputs: a reshape's target shape, reduction axes...). The model is not modified.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    fix_input_values(model, dict(constants or {}))
    fix_input_shapes(model, dict(input_shapes or {}), source)
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        if not inp.type.HasField("tensor_type"):
            raise _not_a_tensor(inp, source)
        dims = inp.type.tensor_type.shape.dim
        free = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if free or not inp.type.tensor_type.HasField("shape"):
            what = f"symbolic dim {free[0]!r}" if free else "no shape"
            raise ConfigError(
                f"{source}: input {inp.name!r} has {what}; give data with --inputs FILE.npz "
                "(or input_shapes=) to fix its shape"
            )
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"{source}: ONNX shape inference failed: {first}") from e
    return OnnxImport(model, dtype, source).run()
