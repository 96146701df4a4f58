"""Shared fixtures: offline HuggingFace, deterministic seeds, small model builders."""

from __future__ import annotations

import os
import runpy
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ["COEC_CACHE"] = "0"  # tests count compiles; tests/test_cache.py turns it on

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> tuple[torch.nn.Module, tuple]:
    ns = runpy.run_path(str(EXAMPLES / f"{name}.py"))
    return ns["model"](), ns["example_inputs"]()


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """max |out - ref| relative to the reference's scale."""
    scale = ref.abs().max().item() or 1.0
    return (out.float() - ref.float()).abs().max().item() / scale


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
