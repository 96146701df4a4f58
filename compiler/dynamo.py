"""coec as a ``torch.compile`` backend.

    model = torch.compile(model, backend="coec", options={"fusion": "dataflow"})
    with torch.no_grad():
        y = model(x)            # each captured graph runs on coec's NumPy runtime
    coec.last_report()          # the modeled cost of the graph that ran last

The backend is registered under the ``torch_dynamo_backends`` entry point. Dynamo
hands it one FX graph per captured region (a graph break gives several); each is
exported with ``torch.export``, compiled by coec's pipeline and run by the NumPy
runtime. Parameters, which dynamo passes as graph inputs, become the compiled
model's weights (resident in HBM, counted as weights).

Inference only: outputs carry no autograd history. Shapes are static: a graph
dynamo makes dynamic (SymInt inputs) is refused with a clear error.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import fields

import torch

from coec.ir.errors import ConfigError
from coec.pipeline import Options, compile_program

#: options the backend takes besides the pipeline's own (``Options`` fields)
_RUNTIME_OPTIONS = ("emulate_bf16", "step_rows", "on_report")
_reports: list[dict] = []  # per compiled graph: its latest report, in compile order
_last: dict | None = None


def last_report() -> dict | None:
    """The report of the compiled graph that ran last (``None`` before any call)."""
    return _last


def reports() -> list[dict]:
    """The latest report of every graph compiled so far, in compile order."""
    return list(_reports)


def reset() -> None:
    """Forget the reports (``torch._dynamo.reset()`` forgets the compiled graphs)."""
    global _last
    _reports.clear()
    _last = None


class _Lifted(torch.nn.Module):
    """Dynamo's graph with its parameter inputs bound as parameters again."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: list):
        super().__init__()
        self.gm = gm
        self.n = len(example_inputs)
        self.params = [i for i, x in enumerate(example_inputs) if isinstance(x, torch.nn.Parameter)]
        self.users = [i for i in range(self.n) if i not in self.params]
        for j, i in enumerate(self.params):
            weight = torch.nn.Parameter(example_inputs[i].detach(), requires_grad=False)
            self.register_parameter(f"p{j}", weight)

    def forward(self, *user_inputs):
        args: list = [None] * self.n
        for i, x in zip(self.users, user_inputs, strict=True):
            args[i] = x
        for j, i in enumerate(self.params):
            args[i] = getattr(self, f"p{j}")
        return self.gm(*args)


def _options(options: dict | None) -> tuple[Options, dict]:
    options = dict(options or {})
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(options) - known - set(_RUNTIME_OPTIONS))
    if unknown:
        choices = ", ".join(sorted(known | set(_RUNTIME_OPTIONS)))
        raise ConfigError(f"coec backend: unknown option {unknown[0]!r}; options: {choices}")
    runtime = {k: options.pop(k) for k in _RUNTIME_OPTIONS if k in options}
    return Options.of(**options).normalized(), runtime


def backend(gm: torch.fx.GraphModule, example_inputs: list, options: dict | None = None):
    """Compile one dynamo graph with coec; returns a callable running it on the NumPy runtime."""
    from coec.api import CompiledModel, to_numpy

    pipeline_options, runtime = _options(options)
    if any(not isinstance(x, torch.Tensor) for x in example_inputs):
        raise ConfigError(
            "coec compiles static shapes: this graph has symbolic sizes; "
            "use torch.compile(..., dynamic=False)"
        )
    lifted = _Lifted(gm, example_inputs).eval()
    user_inputs = tuple(example_inputs[i].detach() for i in lifted.users)
    with torch.no_grad():  # the output's structure and dtypes, to hand back alike
        template, structure = torch.utils._pytree.tree_flatten(gm(*example_inputs))
    compiled = compile_program(lifted, user_inputs, pipeline_options)
    cm = CompiledModel(
        compiled,
        emulate_bf16=runtime.get("emulate_bf16", False),
        step_rows=runtime.get("step_rows", 256),
    )
    slot = len(_reports)
    _reports.append(cm.report)
    on_report: Callable[[dict], None] | None = runtime.get("on_report")
    tracks_grad = any(x.requires_grad for x in example_inputs)

    def run(*args):
        global _last
        if tracks_grad and torch.is_grad_enabled():
            warnings.warn(
                "coec backend runs inference only: outputs carry no gradient "
                "(call the model under torch.no_grad())",
                stacklevel=2,
            )
        feeds = [to_numpy(args[i]) for i in lifted.users]
        outs, report = cm.executor.run(feeds)
        cm.report = _reports[slot] = _last = report
        if on_report:
            on_report(report)
        produced = iter(outs)
        leaves = [
            torch.from_numpy(next(produced).copy()).to(leaf.dtype)
            if isinstance(leaf, torch.Tensor)
            else leaf
            for leaf in template
        ]
        return torch.utils._pytree.tree_unflatten(leaves, structure)

    return run
