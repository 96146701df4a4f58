"""NumPy semantics of every df op: the executable specification of the dialect.

One handler per op family, each ``(inputs, attrs, out_shape) -> ndarray``.
Floating data is computed in float32 (float64 inputs stay float64); integers at
their storage width, so they wrap around as stored; booleans as bool. bf16 storage
is emulated, when asked, by the executor rounding what it stores — not here.
"""

from __future__ import annotations

from collections.abc import Callable

import ml_dtypes
import numpy as np

from coec.ir.dtypes import DTYPES, ROUND_TYPES

Handler = Callable[[list[np.ndarray], dict, tuple[int, ...]], np.ndarray]
HANDLERS: dict[str, Handler] = {}


def handles(name: str):
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def _erf(x: np.ndarray) -> np.ndarray:
    """erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7), vectorised."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return (np.sign(x) * (1.0 - poly * np.exp(-x * x))).astype(x.dtype)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0).astype(x.dtype)))


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    c = np.sqrt(2.0 / np.pi).astype(x.dtype)
    return 0.5 * x * (1.0 + np.tanh(c * (x + 0.044715 * (x * x * x))))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0, -x)).astype(x.dtype)


UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "neg": np.negative,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: 1.0 / np.sqrt(x),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "gelu": _gelu,
    "gelu_tanh": _gelu_tanh,
    "silu": lambda x: x * _sigmoid(x),
    "sin": np.sin,
    "cos": np.cos,
    "abs": np.abs,
    "reciprocal": lambda x: 1.0 / x,
    "erf": _erf,
    "logical_not": np.logical_not,
}
#: the NumPy type of each ``round_<type>`` kind's target (ml_dtypes' conversions: nearest
#: even for floats, overflow to inf or NaN; integers truncate and wrap around)
NARROW = {
    "f16": np.float16,
    "bf16": ml_dtypes.bfloat16,
    "f8e4m3fn": ml_dtypes.float8_e4m3fn,
    "f8e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "f8e5m2": ml_dtypes.float8_e5m2,
    "f8e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "f4e2m1": ml_dtypes.float4_e2m1fn,
    "i4": ml_dtypes.int4,
    "u4": ml_dtypes.uint4,
    "i2": ml_dtypes.int2,
    "u2": ml_dtypes.uint2,
}
assert set(NARROW) == set(ROUND_TYPES), "round_<type> kinds differ from coec.ir.dtypes"
for _name, _type in NARROW.items():
    UNARY[f"round_{_name}"] = lambda x, t=_type: x.astype(t).astype(x.dtype)
BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "eq": np.equal,
    "ne": np.not_equal,
    "lt": np.less,
    "le": np.less_equal,
    "gt": np.greater,
    "ge": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
}

_SMALL_POWERS = {
    2.0: lambda x: x * x,
    3.0: lambda x: x * x * x,
    0.5: np.sqrt,
    1.0: lambda x: x,
}

#: NumPy compute dtype per storage dtype (integers at their own width: they wrap around)
COMPUTE_DTYPE = {name: np.dtype(d.compute) for name, d in DTYPES.items()}


def as_compute(x: np.ndarray, dtype: str) -> np.ndarray:
    want = COMPUTE_DTYPE[dtype]
    return x if x.dtype == want else x.astype(want)


@handles("elementwise")
def elementwise(xs, attrs, shape):
    kind = attrs["kind"]
    if kind == "cast":  # run_op converts to the result's dtype
        return xs[0]
    if kind in UNARY:
        return UNARY[kind](xs[0])
    if kind == "pow" and np.ndim(xs[1]) == 0 and float(xs[1]) in _SMALL_POWERS:
        return _SMALL_POWERS[float(xs[1])](xs[0])  # np.power goes through exp/log: slow
    if kind in BINARY:
        a, b = xs
        if kind in ("div", "pow") and a.dtype.kind in "iub" and b.dtype.kind in "iub":
            a = a.astype(np.float64)  # wide enough for every integer up to 2**53
        out = BINARY[kind](a, b)
        return out
    if kind == "where":
        return np.where(xs[0].astype(bool), xs[1], xs[2])
    raise KeyError(kind)


@handles("matmul")
def matmul(xs, attrs, shape):
    a, b = xs
    if attrs["transpose_b"]:
        b = np.swapaxes(b, -1, -2)
    return np.matmul(a, b)


_REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}


def _lowest(dtype: np.dtype, highest: bool = False):
    """The identity of max (of min with ``highest``): what a reduction over nothing gives."""
    if dtype.kind == "b":
        return highest
    if dtype.kind == "f":
        return np.inf if highest else -np.inf
    info = np.iinfo(dtype)
    return info.max if highest else info.min


@handles("reduce")
def reduce(xs, attrs, shape):
    x, kind = xs[0], attrs["kind"]
    kw = {"axis": tuple(attrs["axes"]), "keepdims": attrs["keepdim"]}
    if kind in ("max", "min") and x.size == 0:  # over the empty set: the op's identity
        kw["initial"] = _lowest(x.dtype, highest=kind == "min")
    return np.asarray(_REDUCE[kind](x, **kw))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@handles("softmax")
def softmax(xs, attrs, shape):
    x, axis = xs[0], attrs["axis"]
    if attrs["log"]:
        m = np.max(x, axis=axis, keepdims=True)
        return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return _softmax(x, axis)


def _norm_axes(x: np.ndarray, ndims: int) -> tuple[int, ...]:
    return tuple(range(x.ndim - ndims, x.ndim))


@handles("layernorm")
def layernorm(xs, attrs, shape):
    x, rest = xs[0], xs[1:]
    axes = _norm_axes(x, attrs["ndims"])
    mean = np.mean(x, axis=axes, keepdims=True)
    var = np.mean(np.square(x - mean), axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.float32(attrs["eps"]))
    if attrs["has_weight"]:
        y = y * rest.pop(0)
    if attrs["has_bias"]:
        y = y + rest.pop(0)
    return y


@handles("rmsnorm")
def rmsnorm(xs, attrs, shape):
    x = xs[0]
    axes = _norm_axes(x, attrs["ndims"])
    y = x / np.sqrt(np.mean(np.square(x), axis=axes, keepdims=True) + np.float32(attrs["eps"]))
    return y * xs[1] if len(xs) > 1 else y


@handles("attention")
def attention(xs, attrs, shape):
    q, k, v = xs[:3]
    hq, hk = q.shape[-3] if q.ndim >= 3 else 1, k.shape[-3] if k.ndim >= 3 else 1
    if hq != hk:  # grouped-query attention: each k/v head serves hq/hk query heads
        k = np.repeat(k, hq // hk, axis=-3)
        v = np.repeat(v, hq // hk, axis=-3)
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(attrs["scale"])
    L, S = s.shape[-2], s.shape[-1]
    if attrs["is_causal"]:  # top-left aligned; a tile of queries starts at q_offset
        keep = np.tril(np.ones((L, S), dtype=bool), k=attrs.get("q_offset", 0))
        s = np.where(keep, s, -np.inf)
    if len(xs) > 3:
        mask = xs[3]
        s = np.where(mask, s, -np.inf) if mask.dtype == np.bool_ else s + mask
    return np.matmul(_softmax(s, -1), v)


@handles("reshape")
def reshape(xs, attrs, shape):
    return xs[0].reshape(shape)


@handles("permute")
def permute(xs, attrs, shape):
    return np.ascontiguousarray(np.transpose(xs[0], attrs["perm"]))


@handles("slice")
def slice_(xs, attrs, shape):
    index = [slice(None)] * xs[0].ndim
    index[attrs["axis"]] = slice(attrs["start"], attrs["end"], attrs["step"])
    return np.ascontiguousarray(xs[0][tuple(index)])


@handles("concat")
def concat(xs, attrs, shape):
    return np.concatenate(xs, axis=attrs["axis"])


@handles("broadcast")
def broadcast(xs, attrs, shape):
    return np.ascontiguousarray(np.broadcast_to(xs[0], shape))


@handles("gather")
def gather(xs, attrs, shape):
    table, idx = xs
    return np.take(table, idx.astype(np.int64), axis=attrs["axis"])


@handles("topk")
def topk(xs, attrs, shape):
    x, axis, k = xs[0], attrs["axis"], attrs["k"]
    key = -x if attrs["largest"] else x  # a stable sort: ties to the lower position
    order = np.argsort(key, axis=axis, kind="stable").take(np.arange(k), axis=axis)
    return order.astype(np.int64) if attrs["indices"] else np.take_along_axis(x, order, axis)


@handles("update")
def update(xs, attrs, shape):
    dest, src = xs
    out = np.array(dest, copy=True)
    index = [slice(None)] * out.ndim
    index[attrs["axis"]] = slice(attrs["start"], attrs["start"] + src.shape[attrs["axis"]])
    out[tuple(index)] = src
    return out


def _whole_in(x: np.ndarray, info: np.iinfo) -> bool:
    """Is ``x`` a float holding a whole number in ``info``'s range?"""
    return x.dtype.kind == "f" and float(x).is_integer() and info.min <= float(x) <= info.max


def run_op(name: str, inputs: list[np.ndarray], attrs: dict, shape, dtype: str) -> np.ndarray:
    """Compute one op; the result is brought to its compute dtype and shape."""
    if name == "elementwise" and COMPUTE_DTYPE[dtype].kind in "iu":
        # an integer op computes at its width: its whole immediates (float32) join it there
        info = np.iinfo(COMPUTE_DTYPE[dtype])
        inputs = [x.astype(info.dtype) if x.ndim == 0 and _whole_in(x, info) else x for x in inputs]
    out = HANDLERS[name](inputs, attrs, tuple(shape))
    out = as_compute(np.asarray(out), dtype)
    if out.shape != tuple(shape):
        out = np.broadcast_to(out, shape).copy()
    return out
