"""The df dialect: compact types, verifiers, and print -> parse -> print round trips."""

from __future__ import annotations

import pytest
from conftest import load_example
from xdsl.ir import Block

import coec
from coec.ir import TensorType, parse_module, print_module
from coec.ir import ops as df
from coec.pipeline import Options, compile_program


@pytest.mark.parametrize(
    "text",
    [
        "!df.tensor<4x64xbf16, hbm>",
        "!df.tensor<bf16, sram>",
        "!df.tensor<2x8xi64>",
        "!df.tensor<1x1xf32, ddr>",
    ],
)
def test_tensor_type_prints_compactly_and_parses_back(text):
    module = parse_module(
        f"builtin.module {{\n  func.func @f(%a: {text}) -> {text} {{\n    func.return %a : {text}\n  }}\n}}\n"
    )
    assert text in print_module(module)


def test_tensor_type_bytes_follow_storage_dtype():
    assert TensorType((4, 64), "bf16", "hbm").nbytes == 4 * 64 * 2
    assert TensorType((3,), "f32").nbytes == 12
    assert TensorType((), "i64").nbytes == 8


def test_unknown_tier_or_dtype_is_rejected():
    with pytest.raises(coec.VerifyError):
        TensorType((2,), "f8")
    with pytest.raises(coec.VerifyError, match="tier"):
        parse_module(
            "builtin.module {\n  func.func @f(%a: !df.tensor<2xf32, l3>) -> !df.tensor<2xf32, l3> {\n"
            "    func.return %a : !df.tensor<2xf32, l3>\n  }\n}\n"
        )


def test_matmul_verifier_rejects_bad_contraction():
    block = Block(arg_types=[TensorType((4, 8), "f32"), TensorType((7, 3), "f32")])
    op = df.MatmulOp(block.args[0], block.args[1], False, TensorType((4, 3), "f32"))
    block.add_op(op)
    with pytest.raises(coec.VerifyError, match="contraction mismatch"):
        op.verify_()


def test_elementwise_verifier_checks_broadcast_shape():
    block = Block(arg_types=[TensorType((4, 8), "f32"), TensorType((8,), "f32")])
    good = df.ElementwiseOp("add", list(block.args), TensorType((4, 8), "f32"))
    bad = df.ElementwiseOp("add", list(block.args), TensorType((4, 4), "f32"))
    good.verify_()
    with pytest.raises(coec.VerifyError, match="result shape"):
        bad.verify_()
    with pytest.raises(coec.VerifyError, match="takes 1 operands"):
        df.ElementwiseOp("relu", list(block.args), TensorType((4, 8), "f32")).verify_()


@pytest.mark.parametrize("stage", ["frontend", "after-fuse", "after-place"])
@pytest.mark.parametrize("name", ["gpt_block", "llama_block"])
def test_print_parse_print_is_identical(name, stage):
    model, inputs = load_example(name)
    compiled = compile_program(model, inputs, Options(), dump_points=(stage,))
    text = compiled.dumps[stage]
    assert print_module(parse_module(text)) == text
    assert ("df.kernel" in text) == (stage != "frontend")
    assert (", hbm>" in text) == (stage == "after-place")


def test_placed_ir_keeps_kernel_internals_in_sram():
    model, inputs = load_example("mlp")
    compiled = compile_program(model, inputs, Options(), dump_points=("after-place",))
    for line in compiled.dumps["after-place"].splitlines():
        if "df.matmul" in line or "df.elementwise" in line:
            assert ", hbm>" not in line and ", sram>" in line


def test_malformed_ir_text_is_one_verify_error():
    with pytest.raises(coec.VerifyError, match="<ir>"):
        parse_module("builtin.module { df.nonsense }")
