"""coec — a dataflow compiler and NumPy reference runtime for a modeled SN40L-style RDU.

import coec
cm = coec.compile(module, example_inputs, target="sn40l")
y = cm(*example_inputs)          # runs on the NumPy runtime
cm.report["bytes"]["hbm->sram"]  # what it cost on the modeled chip
cm = coec.compile_onnx("model.onnx", fusion="dataflow")  # the ONNX frontend
cm = coec.compile_hf_config("qwen2-7b", phase="decode", seq=4096, target="sn40l-node")
torch.compile(module, backend="coec")  # as a torch.compile backend; coec.last_report()

The top-level names load on first use (PEP 562), so ``import coec.runtime`` or
``import coec.ir.errors`` loads neither torch nor xDSL.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from coec.ir.errors import (
    CapacityError,
    CoecError,
    ConfigError,
    ExecutionError,
    ScheduleFormatError,
    UnsupportedOpError,
    VerifyError,
)

if TYPE_CHECKING:
    from coec.api import CompiledModel, compile, compile_onnx
    from coec.commands import compile_hf_config
    from coec.dynamo import last_report
    from coec.pipeline import Options

__version__ = "0.1.0"

#: lazily loaded public names -> the module that defines them
_LAZY = {
    "CompiledModel": "coec.api",
    "compile": "coec.api",
    "compile_onnx": "coec.api",
    "compile_hf_config": "coec.commands",
    "last_report": "coec.dynamo",
    "Options": "coec.pipeline",
}

__all__ = [
    "CapacityError",
    "CoecError",
    "CompiledModel",
    "ConfigError",
    "ExecutionError",
    "Options",
    "ScheduleFormatError",
    "UnsupportedOpError",
    "VerifyError",
    "compile",
    "compile_hf_config",
    "compile_onnx",
    "last_report",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'coec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
