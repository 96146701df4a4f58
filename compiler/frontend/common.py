"""What the ATen and ONNX frontends share: the lowered ``Program``, the builder interface
their handlers emit through, and the helpers both use (name hints, slices, dims)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Operation, SSAValue

from coec.ir import ops as df
from coec.ir.types import TensorType

if TYPE_CHECKING:
    import torch


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
    #: op -> where the user wrote it (module path and source line), when known
    origins: dict = field(default_factory=dict)
    #: inputs the model writes in place, in order: the first outputs are their new values
    mutated_inputs: list[str] = field(default_factory=list)

    @property
    def func(self) -> func.FuncOp:
        return next(op for op in self.module.ops if isinstance(op, func.FuncOp))


class Builder(Protocol):
    """A frontend's lowering state, as handlers and shared builders see it."""

    def emit(self, op: Operation, hint: str | None = None) -> SSAValue: ...
    def like(self, v: SSAValue, shape=None, dtype: str | None = None) -> TensorType: ...


def name_hint(name: str) -> str:
    """A valid IR name hint made of ``name`` (anything but letters, digits and _ becomes _)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def norm_dim(d: int, rank: int) -> int:
    """A possibly negative dim as an index into ``rank`` dims (0 for a scalar)."""
    return d % rank if rank else 0


def slice_value(b: Builder, x: SSAValue, axis: int, start, end, step: int, hint=None) -> SSAValue:
    """``x[start:end:step]`` along ``axis`` (Python slice rules); ``x`` itself when whole."""
    shape = list(df.tensor_type(x).shape_tuple)
    start, end, step = slice(start, end, step).indices(shape[axis])
    if (start, end, step) == (0, shape[axis], 1):
        return x
    shape[axis] = len(range(start, end, step))
    return b.emit(df.SliceOp(x, axis, start, end, step, b.like(x, shape)), hint)
