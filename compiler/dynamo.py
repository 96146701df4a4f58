"""coec as a ``torch.compile`` backend.

    model = torch.compile(model, backend="coec", options={"fusion": "dataflow"})
    with torch.no_grad():
        y = model(x)            # each captured graph runs on coec's NumPy runtime
    coec.last_report()          # the modeled cost of the graph that ran last

The backend is registered under the ``torch_dynamo_backends`` entry point. Dynamo
hands it one FX graph per captured region (a graph break gives several); each is
exported with ``torch.export``, compiled by coec's pipeline and run by the NumPy
runtime. Parameters and buffers, which dynamo passes as graph inputs, become the
compiled model's weights (resident in HBM, counted as weights).

Inference only: outputs carry no autograd history. Shapes are static per compile:
a graph dynamo makes dynamic after a shape change (SymInt inputs) is compiled on
first call for each concrete shape. A graph coec cannot compile runs eagerly with
one warning naming the op and the user's line (``strict=True``: an error); its
report is ``{"ran": "eager", "reason": ...}``, a compiled one's has ``"ran": "coec"``.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable
from dataclasses import fields

import torch

from coec.ir.errors import CoecError, ConfigError
from coec.pipeline import Options, compile_program

#: options the backend takes besides the pipeline's own (``Options`` fields)
_RUNTIME_OPTIONS = ("emulate_bf16", "step_rows", "on_report", "strict")
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
    """Dynamo's graph with its weight inputs (parameters and buffers) bound as parameters
    again and its scalar inputs (the sizes of a dynamic graph) bound to this call's values."""

    def __init__(self, gm: torch.fx.GraphModule, binding: _Binding, scalars: dict[int, object]):
        super().__init__()
        self.gm, self.binding, self.scalars = gm, binding, scalars
        for j, i in enumerate(binding.weights):
            weight = torch.nn.Parameter(binding.example[i].detach(), requires_grad=False)
            self.register_parameter(f"p{j}", weight)

    def forward(self, *user_inputs):
        args: list = [None] * len(self.binding.example)
        for i, x in zip(self.binding.users, user_inputs, strict=True):
            args[i] = x
        for j, i in enumerate(self.binding.weights):
            args[i] = getattr(self, f"p{j}")
        for i, v in self.scalars.items():
            args[i] = v
        return self.gm(*args)


def _is_weight(node: torch.fx.Node | None, x) -> bool:
    """Whether a graph input is one of the module's parameters or buffers.

    Dynamo (torch 2.13, inlining built-in nn modules) lifts both into graph inputs;
    parameters arrive as ``nn.Parameter`` but buffers (BatchNorm's running statistics)
    as plain tensors, told apart only by the placeholder's source: a chain through
    ``UnspecializedParamBufferSource`` (``L['self']._modules['bn']._buffers['running_mean']``).
    """
    if isinstance(x, torch.nn.Parameter):
        return True
    if not isinstance(x, torch.Tensor) or node is None:
        return False
    source = getattr(node.meta.get("grapharg"), "source", None)
    if source is None:
        return False
    from torch._dynamo.source import is_from_unspecialized_param_buffer_source

    try:
        if is_from_unspecialized_param_buffer_source(source):
            return True
    except TypeError:  # an unhashable source: judge by its name
        pass
    return "._buffers[" in source.name or "._parameters[" in source.name


class _Binding:
    """Which of a dynamo graph's inputs are weights, user tensors and scalars (SymInt sizes)."""

    def __init__(self, gm: torch.fx.GraphModule, example_inputs: list):
        nodes = [n for n in gm.graph.nodes if n.op == "placeholder"]
        if len(nodes) != len(example_inputs):
            nodes = [None] * len(example_inputs)
        self.example = list(example_inputs)
        self.weights = [i for i, x in enumerate(example_inputs) if _is_weight(nodes[i], x)]
        # Python numbers dynamo did not specialise (dynamic=True makes BatchNorm's eps one)
        # arrive as 0-d tensors the graph reads with ``.item()``: bound per call as scalars
        self.numbers = [
            i
            for i, node in enumerate(nodes)
            if node is not None and getattr(node.meta.get("grapharg"), "pass_arg_as_tensor", False)
        ]
        self.scalars = [
            i
            for i, x in enumerate(example_inputs)
            if not isinstance(x, torch.Tensor) or i in self.numbers
        ]
        taken = set(self.weights) | set(self.scalars)
        self.users = [i for i in range(len(example_inputs)) if i not in taken]

    def key(self, args) -> tuple:
        """What a compiled variant is specialised on: user tensors' shapes/dtypes, scalars."""
        tensors = tuple((tuple(args[i].shape), args[i].dtype) for i in self.users)
        return tensors, tuple(_value(args[i]) for i in self.scalars)

    def specialised(self, gm: torch.fx.GraphModule, scalars: dict) -> torch.fx.GraphModule:
        """``gm`` with each ``.item()`` of a number input replaced by this call's value."""
        if not self.numbers:
            return gm
        graph = copy.deepcopy(gm.graph)
        nodes = [n for n in graph.nodes if n.op == "placeholder"]
        for i in self.numbers:
            for item in [u for u in nodes[i].users if u.op == "call_method" and u.target == "item"]:
                for user in list(item.users):
                    swap = lambda a, item=item, v=scalars[i]: v if a is item else a  # noqa: E731
                    user.args = torch.fx.node.map_aggregate(user.args, swap)
                    user.kwargs = torch.fx.node.map_aggregate(user.kwargs, swap)
                graph.erase_node(item)
        return torch.fx.GraphModule(gm, graph)


def _value(x):
    """A scalar input's value: an int for a size, a Python number for a 0-d number tensor."""
    if isinstance(x, torch.Tensor):
        return x.item()
    return int(x) if _is_int(x) else x


def _is_int(x) -> bool:
    return isinstance(x, int | torch.SymInt) and not isinstance(x, bool)


def _options(options: dict | None) -> tuple[Options, dict]:
    options = dict(options or {})
    known = {f.name for f in fields(Options)}
    unknown = sorted(set(options) - known - set(_RUNTIME_OPTIONS))
    if unknown:
        choices = ", ".join(sorted(known | set(_RUNTIME_OPTIONS)))
        raise ConfigError(f"coec backend: unknown option {unknown[0]!r}; options: {choices}")
    runtime = {k: options.pop(k) for k in _RUNTIME_OPTIONS if k in options}
    return Options.of(**options).normalized(), runtime


def _where(gm: torch.fx.GraphModule, error: Exception) -> str:
    """The user's source line of the op ``error`` names, found in dynamo's graph."""
    from coec.frontend.lower import source_line

    match = re.search(r"unsupported op (?:aten\.)?([A-Za-z_0-9]+)", str(error))
    if match:
        name = match.group(1)
        for node in gm.graph.nodes:
            if node.op in ("call_function", "call_method") and node.meta.get("stack_trace"):
                target = getattr(node.target, "__name__", str(node.target))
                if target.split(".")[-1].removesuffix("_") == name:
                    return source_line(node)
    return ""


def _fall_back(gm: torch.fx.GraphModule, error: CoecError, strict: bool):
    """Run ``gm`` eagerly (one warning naming the op and line), or raise under strict."""
    where = _where(gm, error)
    # the export's own location is inside this backend's wrapper: name dynamo's instead
    reason = f"{str(error).split(' at ')[0]} at {where}" if where else str(error)
    if strict:
        raise type(error)(reason) from error
    warnings.warn(
        f"coec backend: {reason}; this graph runs in eager PyTorch "
        "(options={'strict': True} makes this an error)",
        stacklevel=2,
    )
    report = {"ran": "eager", "reason": reason}
    _reports.append(report)

    def run(*args):
        global _last
        _last = report
        return gm(*args)

    return run


def backend(gm: torch.fx.GraphModule, example_inputs: list, options: dict | None = None):
    """Compile one dynamo graph with coec; returns a callable running it on the NumPy runtime.

    A graph with scalar (SymInt) inputs, which dynamo hands over after a shape changed,
    is compiled on first call for each concrete shape (and again for each new one).
    A graph coec cannot compile runs eagerly instead, with one warning.
    """
    pipeline_options, runtime = _options(options)
    strict = bool(runtime.get("strict", False))
    binding = _Binding(gm, example_inputs)
    variants: dict[tuple, Callable] = {}

    def variant(args) -> Callable:
        key = binding.key(args)
        if key not in variants:
            scalars = {i: key[1][k] for k, i in enumerate(binding.scalars)}
            try:
                variants[key] = _compile(gm, binding, scalars, args, pipeline_options, runtime)
            except ConfigError:
                raise
            except CoecError as error:  # what coec cannot compile runs eagerly; a coec bug
                variants[key] = _fall_back(gm, error, strict)  # (any other error) surfaces
        return variants[key]

    if not binding.scalars:  # static: compile now, on dynamo's example inputs
        return variant(example_inputs)
    return lambda *args: variant(args)(*args)


def _compile(gm, binding: _Binding, scalars: dict, args, options: Options, runtime: dict):
    from coec.api import CompiledModel, to_numpy

    gm = binding.specialised(gm, scalars)
    scalars = {
        i: torch.tensor(v, dtype=binding.example[i].dtype) if i in binding.numbers else v
        for i, v in scalars.items()
    }
    lifted = _Lifted(gm, binding, scalars).eval()
    user_inputs = tuple(args[i].detach() for i in binding.users)
    with torch.no_grad():  # the output's structure and dtypes, to hand back alike
        template, structure = torch.utils._pytree.tree_flatten(lifted(*user_inputs))
    compiled = compile_program(lifted, user_inputs, options)
    cm = CompiledModel(
        compiled,
        emulate_bf16=runtime.get("emulate_bf16", False),
        step_rows=runtime.get("step_rows", 256),
    )
    slot = len(_reports)
    _reports.append(cm.report)
    on_report: Callable[[dict], None] | None = runtime.get("on_report")
    tracks_grad = any(isinstance(x, torch.Tensor) and x.requires_grad for x in binding.example)

    def run(*args):
        global _last
        if tracks_grad and torch.is_grad_enabled():
            warnings.warn(
                "coec backend runs inference only: outputs carry no gradient "
                "(call the model under torch.no_grad())",
                stacklevel=2,
            )
        feeds = [to_numpy(args[i]) for i in binding.users]
        outs, report = cm.executor.run(feeds)
        report["ran"] = "coec"
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
