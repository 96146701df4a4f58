"""coec — a dataflow compiler and NumPy reference runtime for a modeled SN40L-style RDU.

import coec
cm = coec.compile(module, example_inputs, target="sn40l")
y = cm(*example_inputs)          # runs on the NumPy runtime
cm.report["bytes"]["hbm->sram"]  # what it cost on the modeled chip
cm = coec.compile_onnx("model.onnx", fusion="dataflow")  # the ONNX frontend
torch.compile(module, backend="coec")  # as a torch.compile backend; coec.last_report()
"""

from coec.api import CompiledModel, compile, compile_onnx
from coec.dynamo import last_report
from coec.ir.errors import (
    CapacityError,
    CoecError,
    ConfigError,
    ExecutionError,
    ScheduleFormatError,
    UnsupportedOpError,
    VerifyError,
)

__version__ = "0.1.0"
__all__ = [
    "CapacityError",
    "CoecError",
    "CompiledModel",
    "ConfigError",
    "ExecutionError",
    "ScheduleFormatError",
    "UnsupportedOpError",
    "VerifyError",
    "compile",
    "compile_onnx",
    "last_report",
]
