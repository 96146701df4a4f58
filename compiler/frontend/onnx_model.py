"""A user's model.onnx: loading it, the data it runs on, and onnxruntime as its oracle.

Inputs: the data given (an ``.npz`` / ``.safetensors`` file keyed by input name), or
random data of the graph inputs' shapes from a fixed seed: floats standard normal,
integers in [0, 2) — or below the table size when they index a ``Gather`` (token
ids) — and booleans fair coin flips.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from coec.ir.errors import ConfigError, ExecutionError

SEED = 0


def load_onnx(source: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """The model and a label naming it (its path) for messages."""
    if isinstance(source, onnx.ModelProto):
        return source, f"<onnx {source.graph.name or 'model'}>"
    if not isinstance(source, str | Path):
        raise ConfigError(
            f"an ONNX model is a path or an onnx.ModelProto, not a {type(source).__name__}"
        )
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ONNX file")
    try:
        return onnx.load(str(path)), str(path)
    except Exception as e:  # protobuf's DecodeError and friends
        raise ConfigError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from e


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The inputs a caller feeds (initializers listed as inputs are weights, not inputs)."""
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def _np_dtype(inp: onnx.ValueInfoProto) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(inp.type.tensor_type.elem_type))


def _index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """For inputs used directly as Gather indices: the size of the axis they index."""
    sizes = {i.name: list(i.dims) for i in model.graph.initializer}
    bounds: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[0] in sizes:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            dims = sizes[node.input[0]]
            size = dims[axis] if -len(dims) <= axis < len(dims) else 2
            bounds[node.input[1]] = min(bounds.get(node.input[1], size), size)
    return bounds


def random_inputs(
    model: onnx.ModelProto, seed: int = SEED, data: bool = True
) -> dict[str, np.ndarray]:
    """Deterministic data of every graph input's static shape.

    ``data=False``: zero-stride views of one zero instead (shapes and dtypes, no memory), for
    a count-only compile of a model whose inputs may be far larger than memory.
    """
    rng = np.random.default_rng(seed)
    bounds = _index_bounds(model)
    feeds = {}
    for inp in graph_inputs(model):
        dims = inp.type.tensor_type.shape.dim
        free = [d.dim_param or "?" for d in dims if not d.HasField("dim_value")]
        if free:
            raise ConfigError(
                f"input {inp.name!r} has symbolic dim {free[0]!r}: give data with --inputs FILE.npz"
            )
        shape, dtype = tuple(d.dim_value for d in dims), _np_dtype(inp)
        if not data:
            feeds[inp.name] = np.broadcast_to(np.zeros((), dtype), shape)
        elif dtype.kind == "f":
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[inp.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[inp.name] = rng.integers(0, bounds.get(inp.name, 2), shape).astype(dtype)
    return feeds


def check_inputs(model: onnx.ModelProto, data: dict[str, np.ndarray], source: str) -> dict:
    """The graph inputs picked from user data, in the model's dtypes; one error per problem."""
    feeds = {}
    for inp in graph_inputs(model):
        if inp.name not in data:
            raise ConfigError(f"{source}: no data for the model input {inp.name!r}")
        feeds[inp.name] = np.asarray(data[inp.name]).astype(_np_dtype(inp), copy=False)
    return feeds


def run_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The reference outputs, in graph output order."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        return session.run(None, feeds)
    except Exception as e:  # onnxruntime raises its own exception classes
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExecutionError(f"onnxruntime could not run the model: {first}") from e
