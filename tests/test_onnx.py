"""The ONNX frontend against onnxruntime: the examples exported by torch.onnx (dynamo),
hand-built graphs, constant folding, one-line errors, exact counts, the CLI."""

from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
import torch
from conftest import EXAMPLES, load_example
from onnx import TensorProto, helper
from test_cli import one_error, run_ok
from test_counts import BF16, HID, IN, OUT, B, summary
from test_numerics import MLP

import coec
from coec.commands import run_schedule_file
from coec.frontend.onnx_import import import_onnx
from coec.frontend.onnx_model import random_inputs, run_onnxruntime
from coec.ir import ops as df

# Both sides compute in fp32 (coec stores bf16 only for counting unless --emulate-bf16);
# what differs is summation order in matmuls and reductions (a few ulp of values O(1))
# and coec's erf polynomial (|error| <= 1.5e-7): 1e-5 absolute leaves 10x margin.
ATOL = RTOL = 1e-5
FUSIONS = ("none", "dataflow")
F = TensorProto.FLOAT


def export(name: str, folder) -> onnx.ModelProto:
    module, inputs = load_example(name)
    path = folder / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), dynamo=True, verbose=False)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict:
    """The three examples exported once with torch.onnx.export(dynamo=True) (~1-3 s each)."""
    folder = tmp_path_factory.mktemp("onnx")
    return {name: export(name, folder) for name in ("mlp", "gpt_block", "llama_block")}


def check(model: onnx.ModelProto, feeds: dict, fusion: str = "none", **kw) -> coec.CompiledModel:
    """Compile, run on the NumPy runtime, compare every output with onnxruntime."""
    cm = coec.compile_onnx(model, fusion=fusion, **kw)
    outs = cm(*feeds.values())
    outs = outs if isinstance(outs, tuple) else (outs,)
    refs = run_onnxruntime(model, feeds)
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs, strict=True):
        assert out.shape == ref.shape
        np.testing.assert_allclose(out.numpy(), ref, rtol=RTOL, atol=ATOL)
    return cm


# -- the examples, exported by torch.onnx ------------------------------------------------------
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("name", ["mlp", "gpt_block", "llama_block"])
def test_exported_example_matches_onnxruntime(exported, name, fusion):
    _, inputs = load_example(name)
    model = onnx.load(str(exported[name]))
    cm = check(model, {"x": inputs[0].numpy()}, fusion)
    if fusion == "dataflow":
        assert cm.report["kernels"] == 1  # each example fits one pipelined kernel


def test_exported_example_also_matches_pytorch(exported):
    module, inputs = load_example("llama_block")
    cm = coec.compile_onnx(exported["llama_block"])
    with torch.no_grad():
        ref = module(*inputs)
    torch.testing.assert_close(cm(*inputs), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_exported_mlp_counts_equal_the_pytorch_compile(exported, fusion):
    module, inputs = load_example("mlp")
    from_torch = coec.compile(module, inputs, fusion=fusion)
    from_onnx = coec.compile_onnx(exported["mlp"], fusion=fusion)
    assert summary(from_onnx.report) == summary(from_torch.report)


# -- hand-built graphs -------------------------------------------------------------------------
def make_model(nodes, inputs, outputs, inits=None, opset=18, domains=()) -> onnx.ModelProto:
    """inputs: name -> (elem type, shape); outputs: names (float) or name -> elem type or
    (elem type, shape) (needed where ONNX shape inference does not know an op)."""
    if not isinstance(outputs, dict):
        outputs = dict.fromkeys(outputs, F)
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, (t, s) in inputs.items()],
        [
            helper.make_tensor_value_info(n, *(t if isinstance(t, tuple) else (t, None)))
            for n, t in outputs.items()
        ],
        [onnx.numpy_helper.from_array(np.asarray(a), n) for n, a in (inits or {}).items()],
    )
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, 1) for d in domains)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10 if opset < 23 else 11
    # declare the outputs' shapes as ONNX infers them (the checker wants them)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


def rand(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def i64(*values) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def gemm_relu():
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    inits = {"w": rand(16, 8, seed=1), "b": rand(16, seed=2)}
    return make_model(nodes, {"x": (F, [4, 8])}, ["y"], inits), {"x": rand(4, 8)}


def gemm_trans_a():
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transA=1)]
    inits = {"w": rand(3, 5, seed=1), "c": np.float32(0.25)}
    return make_model(nodes, {"x": (F, [3, 4])}, ["y"], inits), {"x": rand(3, 4)}


def softmax_axis():
    nodes = [
        helper.make_node("Softmax", ["x"], ["s"], axis=1),
        helper.make_node("LogSoftmax", ["x"], ["l"], axis=-1),
    ]
    return make_model(nodes, {"x": (F, [2, 5, 3])}, ["s", "l"]), {"x": rand(2, 5, 3)}


def softmax_opset11():
    # before opset 13, Softmax coerces its input to 2-d at `axis` (here: over the last two dims)
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=1)]
    return make_model(nodes, {"x": (F, [2, 3, 4])}, ["y"], opset=11), {"x": rand(2, 3, 4)}


def reshape_transpose():
    # the second Reshape's shape is a constant subgraph: Shape -> Gather -> Unsqueeze -> Concat
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r"]),  # [2, 3, 4] -> [2, 12] via 0 and -1
        helper.make_node("Transpose", ["r"], ["t"]),  # default perm: reversed -> [12, 2]
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "i0"], ["d0"], axis=0),
        helper.make_node("Unsqueeze", ["d0", "ax0"], ["d0u"]),
        helper.make_node("Concat", ["minus1", "d0u"], ["s2"], axis=0),
        helper.make_node("Reshape", ["t", "s2"], ["y"]),  # [12, 2] -> [12, 2] (-1, dim 0 of x)
        helper.make_node("Transpose", ["y"], ["z"], perm=[1, 0]),
    ]
    inits = {"s1": i64(0, -1), "i0": np.int64(0), "ax0": i64(0), "minus1": i64(-1)}
    return make_model(nodes, {"x": (F, [2, 3, 4])}, ["z"], inits), {"x": rand(2, 3, 4)}


def split_concat():
    nodes = [
        helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=1),
        helper.make_node("Concat", ["b", "a"], ["c"], axis=-1),
        helper.make_node("Split", ["c"], ["p", "q", "r"], axis=1, num_outputs=3),
        helper.make_node("Concat", ["r", "p", "q"], ["y"], axis=0),
    ]
    inits = {"sizes": i64(2, 4)}
    return make_model(nodes, {"x": (F, [2, 6])}, ["y"], inits), {"x": rand(2, 6)}


def where_broadcast():
    nodes = [
        helper.make_node("Less", ["x", "y"], ["m"]),
        helper.make_node("Where", ["m", "x", "zero"], ["w"]),  # [3,1,4] | [1,5,1] -> [3,5,4]
        helper.make_node("Where", ["mask", "w", "y"], ["z"]),  # a known [5,1] mask
    ]
    inits = {"zero": np.float32(0.0), "mask": np.array([[True], [False]] * 2 + [[True]])}
    inputs = {"x": (F, [3, 1, 4]), "y": (F, [1, 5, 1])}
    return make_model(nodes, inputs, ["z"], inits), {"x": rand(3, 1, 4), "y": rand(1, 5, 1)}


def reductions():
    nodes = [
        helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
        helper.make_node("ReduceSum", ["x", "axes2"], ["s"]),
        helper.make_node("ReduceMax", ["x"], ["mx"], keepdims=0),  # no axes: all of them
    ]
    inits = {"axes": i64(-1), "axes2": i64(0, 2)}
    return make_model(nodes, {"x": (F, [2, 3, 4])}, ["m", "s", "mx"], inits), {"x": rand(2, 3, 4)}


def norms():
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["ln"], axis=-1, epsilon=1e-5),
        helper.make_node("RMSNormalization", ["ln", "g"], ["y"], axis=-1, epsilon=1e-6),
    ]
    inits = {"g": rand(8, seed=1), "b": rand(8, seed=2)}
    return make_model(nodes, {"x": (F, [2, 3, 8])}, ["y"], inits, opset=23), {"x": rand(2, 3, 8)}


def pointwise():
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"]),
        helper.make_node("Gelu", ["x"], ["gt"], approximate="tanh"),
        helper.make_node("Erf", ["x"], ["e"]),
        helper.make_node("Sigmoid", ["g"], ["s"]),
        helper.make_node("Pow", ["s", "two"], ["p"]),
        helper.make_node("Sqrt", ["p"], ["q"]),
        helper.make_node("Div", ["q", "gt"], ["d"]),
        helper.make_node("Clip", ["d", "lo", "hi"], ["c"]),
        helper.make_node("Sub", ["c", "e"], ["m"]),
        helper.make_node("Max", ["m", "e", "x"], ["mx"]),
        helper.make_node("Mean", ["mx", "x"], ["y"]),
    ]
    inits = {"two": np.float32(2.0), "lo": np.float32(-3.0), "hi": np.float32(3.0)}
    return make_model(nodes, {"x": (F, [4, 6])}, ["y"], inits, opset=20), {"x": rand(4, 6)}


def movement():
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax"], ["u"]),  # [3, 4] -> [3, 1, 4]
        helper.make_node("Expand", ["u", "shape"], ["e"]),  # -> [3, 2, 4]
        helper.make_node("Slice", ["e", "st", "en", "axs", "sp"], ["s"]),  # reversed last axis
        helper.make_node("Flatten", ["s"], ["f"], axis=1),  # -> [3, 8]
        helper.make_node("Squeeze", ["g1"], ["sq"]),
        helper.make_node("Add", ["f", "sq"], ["y"]),
        helper.make_node("Slice", ["y", "st2", "en2"], ["z"]),  # rows 1: (axes default)
    ]
    inputs = {"x": (F, [3, 4]), "g1": (F, [1, 8])}
    inits = {
        "ax": i64(1),
        "shape": i64(2, 1),
        "st": i64(-1),
        "en": i64(-100),
        "axs": i64(2),
        "sp": i64(-1),
        "st2": i64(1),
        "en2": i64(2**63 - 1),
    }
    feeds = {"x": rand(3, 4), "g1": rand(1, 8, seed=1)}
    return make_model(nodes, inputs, ["z"], inits), feeds


def matmul_1d():
    nodes = [
        helper.make_node("MatMul", ["x", "v"], ["xv"]),  # [2, 3, 4] @ [4] -> [2, 3]
        helper.make_node("MatMul", ["v3", "xv"], ["y"]),  # [2] @ [2, 3] -> [3]
    ]
    inits = {"v": rand(4, seed=1), "v3": rand(2, seed=2)}
    return make_model(nodes, {"x": (F, [2, 3, 4])}, ["y"], inits), {"x": rand(2, 3, 4)}


def embedding_and_casts():
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),  # [2, 5] -> [2, 5, 8]
        helper.make_node("Gather", ["e", "minus1"], ["last"], axis=1),  # [2, 8] (a slice)
        helper.make_node("Gather", ["e", "picks"], ["two"], axis=2),  # [2, 5, 2]
        helper.make_node("Equal", ["ids", "three"], ["is3"]),
        helper.make_node("Cast", ["is3"], ["f3"], to=F),
        helper.make_node("Unsqueeze", ["f3", "ax"], ["f3u"]),
        helper.make_node("Mul", ["two", "f3u"], ["y"]),
        helper.make_node("Trilu", ["last"], ["tri"], upper=0),
    ]
    inits = {
        "table": rand(10, 8),
        "minus1": np.int64(-1),
        "picks": i64(0, -1),
        "three": np.int64(3),
        "ax": i64(-1),
    }
    ids = np.random.default_rng(1).integers(0, 10, (2, 5))
    model = make_model(nodes, {"ids": (TensorProto.INT64, [2, 5])}, ["y", "tri"], inits)
    return model, {"ids": ids}


def folded_constants():
    # every input of Range, ConstantOfShape, Trilu, Cos is known: only the Add is computed
    nodes = [
        helper.make_node("Constant", [], ["n"], value=helper.make_tensor("n", F, [], [4.0])),
        helper.make_node("Range", ["zero", "n", "one"], ["pos"]),
        helper.make_node(
            "ConstantOfShape", ["shape"], ["ones"], value=helper.make_tensor("v", F, [1], [1.0])
        ),
        helper.make_node("Trilu", ["ones"], ["tri"], upper=0),
        helper.make_node("Mul", ["tri", "pos"], ["tp"]),
        helper.make_node("Cos", ["tp"], ["c"]),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    inits = {"zero": np.float32(0), "one": np.float32(1), "shape": i64(4, 4)}
    return make_model(nodes, {"x": (F, [2, 4, 4])}, ["y"], inits), {"x": rand(2, 4, 4)}


def nan_guard():
    # SDPA exports guard softmax with IsNaN/Where; BERT's position buffer is a GatherElements
    nodes = [
        helper.make_node("GatherElements", ["buf", "pos"], ["g"], axis=1),  # folded
        helper.make_node("Cast", ["g"], ["gf"], to=F),
        helper.make_node("Add", ["x", "gf"], ["a"]),
        helper.make_node("Softmax", ["a"], ["s"], axis=-1),
        helper.make_node("IsNaN", ["s"], ["n"]),
        helper.make_node("Where", ["n", "zero", "s"], ["y"]),
    ]
    inits = {"buf": np.arange(16).reshape(1, 16), "pos": i64(3, 1, 4, 1).reshape(1, 4)}
    inits["zero"] = np.float32(0)
    x = rand(3, 4)
    x[1] = -np.inf  # a fully masked row: softmax is NaN, the guard makes it 0
    return make_model(nodes, {"x": (F, [3, 4])}, ["y"], inits), {"x": x}


def contrib_ops():
    # onnxruntime's contrib ops, which ONNX shape inference does not know
    nodes = [
        helper.make_node("Gelu", ["x"], ["g"], domain="com.microsoft"),
        helper.make_node("SimplifiedLayerNormalization", ["g", "s"], ["y"], epsilon=1e-5),
    ]
    inits = {"s": rand(8, seed=1)}
    outputs = {"y": (F, [2, 8])}
    model = make_model(nodes, {"x": (F, [2, 8])}, outputs, inits, domains=["com.microsoft"])
    return model, {"x": rand(2, 8)}


GRAPHS = {
    f.__name__: f
    for f in (
        gemm_relu,
        gemm_trans_a,
        softmax_axis,
        softmax_opset11,
        reshape_transpose,
        split_concat,
        where_broadcast,
        reductions,
        norms,
        pointwise,
        movement,
        matmul_1d,
        embedding_and_casts,
        folded_constants,
        nan_guard,
        contrib_ops,
    )
}


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # nan_guard's NaN row
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_hand_built_graph_matches_onnxruntime(name, fusion):
    model, feeds = GRAPHS[name]()
    if name != "contrib_ops":  # the checker knows only standard ops
        onnx.checker.check_model(model, full_check=True)
    check(model, feeds, fusion, dtype="fp32")


def ops_of(program) -> list[str]:
    return [op.name for op in program.func.body.block.ops if op.name != "func.return"]


def test_constant_subgraphs_fold_at_import():
    model, _ = folded_constants()
    program = import_onnx(model)
    # one folded table (cos of the masked positions) and the add; no Range, Trilu, Cos
    assert ops_of(program) == ["df.weight", "df.elementwise"]
    (name,) = program.weights
    expected = np.cos(np.tril(np.ones((4, 4))) * np.arange(4))
    np.testing.assert_allclose(program.weights[name].numpy(), expected, rtol=1e-6)


def test_shape_arithmetic_folds_away():
    model, _ = reshape_transpose()
    program = import_onnx(model)
    # Reshape, Transpose, Reshape to the shape it has (no op), Transpose; no Shape/Gather/Concat
    assert ops_of(program) == ["df.reshape", "df.permute", "df.permute"]
    assert not program.weights


def test_one_element_constants_become_immediates():
    model, _ = pointwise()
    program = import_onnx(model)
    kinds = [op.name for op in program.func.body.block.ops]
    assert "df.weight" not in kinds and kinds.count("df.constant") >= 3


def test_result_shapes_agree_with_shape_inference_on_every_graph():
    # the importer checks each result against onnx.shape_inference; here: the final IR too
    for name, build in GRAPHS.items():
        model, feeds = build()
        program = import_onnx(model, "f32")
        outs = program.func.body.block.last_op.operands
        refs = run_onnxruntime(model, feeds)
        assert [df.tensor_type(v).shape_tuple for v in outs] == [r.shape for r in refs], name


# -- errors ------------------------------------------------------------------------------------
def nms_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Relu", ["boxes"], ["b"], name="relu_0"),
        helper.make_node(
            "NonMaxSuppression", ["b", "scores"], ["keep"], name="nms_3", center_point_box=0
        ),
    ]
    inputs = {"boxes": (F, [1, 6, 4]), "scores": (F, [1, 1, 6])}
    return make_model(nodes, inputs, {"keep": TensorProto.INT64})


def test_unsupported_op_is_one_line_naming_op_and_node():
    with pytest.raises(coec.UnsupportedOpError) as info:
        coec.compile_onnx(nms_model())
    assert str(info.value) == "ONNX op NonMaxSuppression (node 'nms_3') is not supported by coec"


def test_unsupported_op_without_a_node_name_names_its_output():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Round", ["r"], ["y"])]
    model = make_model(nodes, {"x": (F, [2, 2])}, ["y"])
    with pytest.raises(coec.UnsupportedOpError, match=r"^ONNX op Round \(node #1 \(output 'y'\)\)"):
        import_onnx(model)


def test_run_time_shape_is_one_error_naming_the_node():
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"], name="reshape_7")]
    inputs = {"x": (F, [2, 6]), "s": (TensorProto.INT64, [2])}
    with pytest.raises(coec.UnsupportedOpError, match=r"Reshape \(node 'reshape_7'\): a shape"):
        import_onnx(make_model(nodes, inputs, ["y"]))


def test_symbolic_dim_needs_data_and_data_fixes_it():
    nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=-1)]
    model = make_model(nodes, {"x": (F, ["batch", 5])}, ["y"])
    with pytest.raises(coec.ConfigError, match=r"input 'x' has symbolic dim 'batch'"):
        coec.compile_onnx(model)
    x = rand(3, 5)
    check(model, {"x": x}, input_shapes={"x": x.shape})


def test_unsupported_op_via_cli_exits_3_with_one_line(tmp_path, capsys):
    path = tmp_path / "nms.onnx"
    onnx.save(nms_model(), str(path))
    line = one_error(["compile", path], capsys, "NonMaxSuppression", "'nms_3'", code=3)
    assert line == "coec: error: ONNX op NonMaxSuppression (node 'nms_3') is not supported by coec"


def test_cli_errors_for_onnx_files(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xfe")
    one_error(["compile", bad], capsys, "bad.onnx", "not a readable ONNX model", code=2)
    one_error(["compile", tmp_path / "nope.onnx"], capsys, "nope.onnx", "no such", code=2)
    model, feeds = softmax_axis()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    one_error(["compile", path, "--entry", "f"], capsys, "--entry", code=2)
    empty = tmp_path / "empty.npz"
    np.savez(empty, other=feeds["x"])
    one_error(["compile", path, "--inputs", empty], capsys, "no data", "'x'", code=2)
    mlp = EXAMPLES / "mlp.py"
    one_error(["compile", mlp, "--inputs", empty], capsys, "--inputs", code=2)


# -- counts ------------------------------------------------------------------------------------
def mlp_graph(module: MLP) -> onnx.ModelProto:
    """The MLP of test_counts as Gemm(transB) -> Relu -> Gemm, with the module's weights."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1),
    ]
    inits = {
        "w1": module.fc1.weight.detach().numpy(),
        "b1": module.fc1.bias.detach().numpy(),
        "w2": module.fc2.weight.detach().numpy(),
        "b2": module.fc2.bias.detach().numpy(),
    }
    return make_model(nodes, {"x": (F, [B, IN])}, ["y"], inits)


def test_hand_built_mlp_bytes_match_hand_count_and_the_pytorch_compile():
    module = MLP().eval()
    x = torch.randn(B, IN)
    cm = check(mlp_graph(module), {"x": x.numpy()})
    # unfused: matmul, +bias, relu, matmul, +bias; each reads its operands from HBM into
    # SRAM and writes its result back (the same sum as test_counts' PyTorch MLP)
    loads = (
        (B * IN + HID * IN)  # x, W1
        + (B * HID + HID)  # h, b1
        + B * HID  # relu
        + (B * HID + OUT * HID)  # r, W2
        + (B * OUT + OUT)  # y, b2
    ) * BF16
    stores = (3 * B * HID + 2 * B * OUT) * BF16
    assert cm.report["bytes"] == {"hbm->sram": loads, "sram->hbm": stores}
    assert cm.report["kernels"] == 5
    assert cm.report["flops"] == 2 * B * IN * HID + 2 * B * HID * OUT + 2 * B * HID + B * OUT
    from_torch = coec.compile(module, (x,), fusion="none")
    from_torch(x)
    assert summary(cm.report) == summary(from_torch.report)
    assert cm.report["per_kernel"] == from_torch.report["per_kernel"]


def test_same_onnx_model_twice_gives_byte_identical_schedule():
    model, _ = embedding_and_casts()
    a = coec.compile_onnx(model, fusion="dataflow")
    b = coec.compile_onnx(model, fusion="dataflow")
    assert a.schedule_json() == b.schedule_json()


# -- the command line --------------------------------------------------------------------------
def test_random_inputs_are_deterministic_and_index_their_tables():
    model, _ = embedding_and_casts()
    a, b = random_inputs(model), random_inputs(model)
    assert a.keys() == {"ids"} and np.array_equal(a["ids"], b["ids"])
    assert a["ids"].dtype == np.int64 and a["ids"].min() >= 0 and a["ids"].max() < 10


def test_cli_run_reports_error_against_onnxruntime(exported, capsys):
    out = run_ok(["compile", exported["gpt_block"], "--run", "--json"], capsys)
    report = json.loads(out)
    assert report["reference"] == "onnxruntime"
    assert report["max_abs_err"] < ATOL
    text = run_ok(["compile", exported["mlp"], "--run", "--fusion", "dataflow"], capsys)
    assert "max |err| vs onnxruntime" in text and "fusion dataflow" in text


def test_cli_inputs_file_output_and_run(tmp_path, capsys):
    model, _ = embedding_and_casts()
    path = tmp_path / "emb.onnx"
    onnx.save(model, str(path))
    ids = np.random.default_rng(5).integers(0, 10, (2, 5))
    np.savez(tmp_path / "in.npz", ids=ids)
    schedule = tmp_path / "out" / "emb.json"
    argv = ["compile", path, "--inputs", tmp_path / "in.npz", "--run", "--json", "-o", schedule]
    report = json.loads(run_ok(argv, capsys))
    assert report["max_abs_err"] < ATOL
    saved = run_schedule_file(schedule).outputs
    refs = run_onnxruntime(model, {"ids": ids})
    for out, ref in zip(saved.values(), refs, strict=True):
        np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


def test_cli_dump_ir_of_an_onnx_model(exported, capsys):
    out = run_ok(["compile", exported["mlp"], "--dump-ir", "frontend"], capsys)
    assert out.count("df.matmul") == 2 and "transpose_b = true" in out and "df.weight" in out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt2", "llama", "bert", "mistral"])
def test_huggingface_sdpa_export_matches_onnxruntime(tmp_path, name):
    # SDPA exports bring IsNaN guards, BERT a GatherElements over its position buffer
    from hf_models import BUILDERS, token_ids

    class Outputs(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids):
            out = self.model(ids)
            return out.logits if hasattr(out, "logits") else out.last_hidden_state

    module, ids = Outputs(BUILDERS[name]("sdpa").eval()), token_ids()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (ids,), str(path), dynamo=True, verbose=False)
    model = onnx.load(str(path))
    cm = check(model, {model.graph.input[0].name: ids.numpy()}, "dataflow")
    assert cm.report["kernels"] < 10
