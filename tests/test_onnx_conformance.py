"""ONNX conformance: onnx's backend node tests of every op type coec claims, through coec.

Each op type's cases must pass (outputs equal to onnx's expected outputs within the
per-dtype tolerance of ``onnx_conformance.tolerance``) or be refused exactly as
``onnx_conformance.REFUSALS`` records. ``python tests/onnx_conformance.py`` prints the
per-op table. Then regression tests of the fixes the conformance run found, against
PyTorch or NumPy.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_conformance import (
    CACHE,
    EXPECTED_REFUSALS,
    load_cases,
    run_cases,
    table,
    unexpected,
)

import coec
from coec.frontend.registry import onnx_lowerings
from coec.ir.errors import ConfigError, UnsupportedOpError

pytestmark = pytest.mark.onnx_conformance


@pytest.fixture(scope="module")
def cases(pytestconfig):
    """Every claimed op type's node cases (generated once, ~10 s, then cached)."""
    cache = getattr(pytestconfig, "cache", None)  # None under -p no:cacheprovider
    by_op: dict[str, list] = {}
    for c in load_cases(cache.mkdir("onnx-conformance") if cache else CACHE):
        by_op.setdefault(c.op, []).append(c)
    return by_op


@pytest.mark.parametrize("op", sorted(onnx_lowerings()))
def test_node_cases_pass_or_are_listed_refusals(cases, op):
    if op not in cases:
        pytest.skip(f"onnx has no node test of {op}")
    results = run_cases(cases[op])
    problems = unexpected(results)
    assert not problems, table(results) + "\n" + "\n".join(problems)


def test_every_listed_refusal_is_a_case(cases):
    names = {c.name for op_cases in cases.values() for c in op_cases}
    assert set(EXPECTED_REFUSALS) <= names, sorted(set(EXPECTED_REFUSALS) - names)


# -- regressions ---------------------------------------------------------------------------
def one_node(op, inputs, outputs, opset=21, **attrs) -> onnx.ModelProto:
    """A model of one ``op`` node; ``inputs`` / ``outputs``: (name, elem type, shape)."""
    node = helper.make_node(op, [n for n, *_ in inputs], [n for n, *_ in outputs], **attrs)
    graph = helper.make_graph(
        [node],
        op.lower(),
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def run(model, *feeds, **kw):
    out = coec.compile_onnx(model, dtype="fp32", **kw)(*feeds)
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize(
    ("elem", "dtype", "a", "b", "want"),
    [
        (TensorProto.UINT8, np.uint8, 255, 1, 0),
        (TensorProto.INT8, np.int8, 127, 1, -128),
        (TensorProto.UINT32, np.uint32, 2**32 - 1, 2, 1),
        (TensorProto.UINT64, np.uint64, 2**63, 2**63, 0),
    ],
)
def test_integers_wrap_around_at_their_width(elem, dtype, a, b, want):
    model = one_node("Add", [("a", elem, [2]), ("b", elem, [2])], [("y", elem, [2])])
    (y,) = run(model, np.array([a, 3], dtype), np.array([b, 4], dtype))
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, np.array([want, 7], dtype))


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("kind", ["MaxPool", "AveragePool"])
def test_ceil_mode_pools_match_pytorch(kind, count_include_pad):
    """Ceil mode drops a last window that would start past the input (here 5 -> 3, not 4);
    an average divides by the elements it counts, never by the overhang."""
    x = torch.randn(1, 2, 5, 6)
    attrs = dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)
    if kind == "AveragePool":
        attrs["count_include_pad"] = count_include_pad
        ref = torch.nn.functional.avg_pool2d(
            x, (2, 3), 2, 1, ceil_mode=True, count_include_pad=bool(count_include_pad)
        )
    else:
        ref = torch.nn.functional.max_pool2d(x, (2, 3), 2, 1, ceil_mode=True)
    f = TensorProto.FLOAT
    model = one_node(kind, [("x", f, [1, 2, 5, 6])], [("y", f, None)], **attrs)
    (y,) = run(model, x.numpy())
    assert y.shape == tuple(ref.shape) == (1, 2, 3, 4)
    np.testing.assert_allclose(y, ref.numpy(), rtol=1e-6, atol=1e-6)


def test_dropout_in_training_mode_is_one_clear_refusal():
    f, b = TensorProto.FLOAT, TensorProto.BOOL
    model = one_node(
        "Dropout", [("x", f, [3]), ("r", f, []), ("t", b, [])], [("y", f, [3])], opset=13
    )
    constants = {"r": np.array(0.5, np.float32), "t": np.array(True)}
    with pytest.raises(UnsupportedOpError, match=r"Dropout in training mode") as e:
        coec.compile_onnx(model, constants=constants)
    assert "\n" not in str(e.value)
    # training_mode known only at run time: refused too, never the identity
    with pytest.raises(UnsupportedOpError, match=r"training_mode computed at run time"):
        coec.compile_onnx(model, constants={"r": constants["r"]})


def test_clip_bounds_computed_at_run_time():
    f = TensorProto.FLOAT
    model = one_node("Clip", [("x", f, [5]), ("lo", f, []), ("hi", f, [])], [("y", f, [5])])
    x = np.array([-3, -1, 0, 1, 3], np.float32)
    for lo, hi in ((-1.0, 1.0), (0.0, 2.0)):
        (y,) = run(model, x, np.float32(lo), np.float32(hi))
        np.testing.assert_array_equal(y, np.clip(x, lo, hi))


def test_constants_fix_graph_inputs_at_compile_time():
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    model = one_node("Reshape", [("x", f, [2, 3]), ("s", i64, [2])], [("y", f, None)])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (y,) = run(model, x, constants={"s": np.array([3, -1])})
    np.testing.assert_array_equal(y, x.reshape(3, 2))
    with pytest.raises(UnsupportedOpError, match="a shape computed at run time"):
        coec.compile_onnx(model)
    with pytest.raises(ConfigError, match="no graph input 'z'"):
        coec.compile_onnx(model, constants={"z": np.array([6])})


def test_cast_to_float16_and_bfloat16_rounds():
    import ml_dtypes

    x = np.array([1 + 2**-12, 1 / 3, 1000.1], np.float32)
    for elem, np_type in ((TensorProto.FLOAT16, np.float16), (TensorProto.BFLOAT16, None)):
        np_type = np_type or ml_dtypes.bfloat16
        model = one_node("Cast", [("x", TensorProto.FLOAT, [3])], [("y", elem, [3])], to=elem)
        (y,) = run(model, x)
        np.testing.assert_array_equal(y, x.astype(np_type).astype(np.float32))


def test_batch_norm_in_training_mode_uses_the_batch_statistics():
    """Every input at run time; ONNX's running variance is the biased (population) one."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    scale, bias, mean, var = (rng.random(3).astype(np.float32) for _ in range(4))
    f = TensorProto.FLOAT
    names = [("x", f, [2, 3, 4, 5])] + [(n, f, [3]) for n in ("s", "b", "m", "v")]
    outs = [("y", f, [2, 3, 4, 5]), ("rm", f, [3]), ("rv", f, [3])]
    model = one_node("BatchNormalization", names, outs, opset=15, training_mode=1, momentum=0.8)
    y, rm, rv = run(model, x, scale, bias, mean, var)
    bm, bv = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    per_channel = (1, 3, 1, 1)
    want = (x - bm.reshape(per_channel)) / np.sqrt(bv.reshape(per_channel) + 1e-5)
    want = want * scale.reshape(per_channel) + bias.reshape(per_channel)
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, mean * 0.8 + bm * 0.2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rv, var * 0.8 + bv * 0.2, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_node_cases_fused_and_tiled(cases):
    """The same verdicts when every case is fused (dataflow) and streamed in tiles of 2."""
    options = {"dtype": "fp32", "fusion": "dataflow", "max_tile": 2, "step_rows": 1}
    results = run_cases([c for op_cases in cases.values() for c in op_cases], options)
    problems = unexpected(results)
    assert not problems, table(results) + "\n" + "\n".join(problems)


def test_maxpool_indices_match_pytorch():
    """ONNX's Indices count from the start of the tensor, PyTorch's from each (n, c) plane."""
    x = torch.randn(2, 3, 7, 6)
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    attrs = dict(kernel_shape=[3, 2], strides=[2, 1], pads=[1, 0, 1, 1], dilations=[1, 2])
    model = one_node(
        "MaxPool", [("x", f, [2, 3, 7, 6])], [("y", f, None), ("i", i64, None)], **attrs
    )
    y, idx = run(model, x.numpy())
    padded = torch.nn.functional.pad(x, (0, 1, 1, 1), value=-float("inf"))
    ref, ref_idx = torch.nn.functional.max_pool2d(
        padded, (3, 2), (2, 1), dilation=(1, 2), return_indices=True
    )
    np.testing.assert_array_equal(y, ref.numpy())
    # PyTorch indexes the padded plane (width 7, one row above): back to the input's (width 6)
    row, col = ref_idx.numpy() // 7 - 1, ref_idx.numpy() % 7
    planes = np.arange(6).reshape(2, 3, 1, 1) * 7 * 6
    np.testing.assert_array_equal(idx, planes + row * 6 + col)
