"""torch.export front door: capture a module as an ATen graph fit for lowering.

High-level ops are kept whole through decomposition so fusion can see them
(linear, layer_norm, softmax, gelu, silu, embedding, SDPA, rms_norm); every
other op lowers to Core ATen.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings

import torch
from torch.export import ExportedProgram

from coec.ir.errors import ConfigError, UnsupportedOpError

aten = torch.ops.aten

#: ops that stay whole through ``run_decompositions``
KEPT_WHOLE = (
    aten.linear.default,
    aten.layer_norm.default,
    aten.softmax.int,
    aten._softmax.default,
    aten.log_softmax.int,
    aten._log_softmax.default,
    aten.gelu.default,
    aten.silu.default,
    aten.embedding.default,
    aten.scaled_dot_product_attention.default,
    aten.rms_norm.default,
)


def decomposition_table() -> dict:
    table = torch.export.default_decompositions()
    for op in KEPT_WHOLE:
        table.pop(op, None)
    return table


def export_module(module: torch.nn.Module, example_inputs: tuple) -> ExportedProgram:
    """Export (non-strict) and decompose; a failure is one UnsupportedOpError line.

    A module in train mode is exported in eval mode (inference: dropout off, batch norm on
    its running statistics) with a warning, and every submodule's mode is restored after,
    so the caller's module is left as it was.
    """
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(
            f"coec compiles a torch.nn.Module, not a {type(module).__name__}; "
            "wrap a function in an nn.Module whose forward calls it"
        )
    if module.training:
        warnings.warn(
            f"{type(module).__name__} is in train mode: coec compiles it in eval mode "
            "(call .eval() first to silence this); your module's mode is left unchanged",
            stacklevel=3,
        )
    with eval_mode(module):
        return _export(module, example_inputs)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module):
    """``module`` in eval mode for the block, every submodule's own mode restored after."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield module
    finally:
        for m, training in modes.items():
            m.training = training


def _export(module: torch.nn.Module, example_inputs: tuple) -> ExportedProgram:
    torch_log = logging.getLogger("torch")
    level = torch_log.level
    torch_log.setLevel(logging.CRITICAL)  # torch logs whole tracebacks before raising
    said = io.StringIO()  # and prints the graph it gave up on: kept unless export succeeds
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stderr(said):
            warnings.simplefilter("ignore", FutureWarning)  # torch-internal pytree deprecations
            program = torch.export.export(module, tuple(example_inputs), strict=False)
            program = program.run_decompositions(decomposition_table())
    except Exception as e:  # torch raises many types here; the user needs the first line
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise UnsupportedOpError(f"torch.export failed: {first}") from e
    finally:
        torch_log.setLevel(level)
    sys.stderr.write(said.getvalue())
    return program
