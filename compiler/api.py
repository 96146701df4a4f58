"""The Python API: ``coec.compile(module, example_inputs)`` -> a callable compiled model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from coec.backend.schedule import Schedule, dumps, write_files_atomic
from coec.backend.target import Target
from coec.ir.errors import ExecutionError
from coec.outputs import (
    SCHEDULE_HASH,
    inputs_path,
    schedule_files,
    text_hash,
    weights_path,
)
from coec.pipeline import Compiled, Options, compile_onnx_model, compile_program
from coec.runtime.executor import Executor


def to_numpy(t: torch.Tensor | np.ndarray | np.generic) -> np.ndarray:
    if isinstance(t, np.ndarray | np.generic):  # a NumPy scalar is a 0-d input
        return np.asarray(t)
    t = t.detach().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.numpy()


def flatten_outputs(out) -> list[torch.Tensor]:
    """The tensor leaves of a model's output, in torch.export's order."""
    leaves, _ = torch.utils._pytree.tree_flatten(out)
    return [x for x in leaves if isinstance(x, torch.Tensor)]


class CompiledModel:
    """A model compiled for the modeled RDU; calling it runs the NumPy runtime.

    ``report`` holds the counts of the last call (before any call: a count-only
    walk of the schedule); ``estimate`` the backend's static estimate; both have
    the keys ``kernels, flops, cycles, seconds, bytes, peak_bytes``.
    """

    def __init__(self, compiled: Compiled, emulate_bf16: bool = False, step_rows: int = 256):
        self.compiled = compiled
        self.schedule = compiled.schedule
        self._typed = Schedule.from_json(self.schedule)  # read and checked once, run often
        self.emulate_bf16 = emulate_bf16
        self.step_rows = step_rows
        self._executor: Executor | None = None
        _, self.report = Executor(self._typed, count_only=True).run()

    @property
    def weights(self) -> dict[str, np.ndarray]:
        """The weights as NumPy arrays (a model built on the meta device has none)."""
        data = self.compiled.program.weights
        if any(t.device.type == "meta" for t in data.values()):
            raise ExecutionError(
                "this model was built on the meta device: it has no weights to run with; "
                "its report holds the count-only figures"
            )
        return {k: to_numpy(v) for k, v in data.items()}

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(
                self._typed,
                self.weights,
                emulate_bf16=self.emulate_bf16,
                step_rows=self.step_rows,
            )
        return self._executor

    @property
    def estimate(self) -> dict:
        return self.schedule["estimate"]

    @property
    def target(self) -> Target:
        return self.compiled.target

    def __call__(self, *inputs: torch.Tensor | np.ndarray):
        if self.schedule["target"]["sockets"] > 1:
            raise ExecutionError(
                "a tensor-parallel schedule runs one shard per socket: "
                "use coec.runtime.node.run_node with each socket's weights and inputs"
            )
        outs, self.report = self.executor.run([to_numpy(x) for x in inputs])
        outs = self.write_back(inputs, outs)
        # np.asarray keeps a 0-d result 0-d (np.ascontiguousarray would make it 1-d)
        tensors = tuple(torch.from_numpy(np.asarray(o, order="C")) for o in outs)
        return tensors[0] if len(tensors) == 1 else tensors

    def write_back(self, inputs, outs: list) -> list:
        """Inputs the model writes in place get their new values, as in eager PyTorch (a
        KV cache the caller keeps); the model's own outputs are returned."""
        mutated = self.compiled.program.mutated_inputs
        names = self.compiled.program.input_names
        for name, new in zip(mutated, outs, strict=False):
            x = inputs[names.index(name)]
            if isinstance(x, torch.Tensor):
                x.copy_(torch.from_numpy(np.asarray(new)).to(x.dtype))
            elif isinstance(x, np.ndarray) and x.flags.writeable:
                x[...] = new
        return outs[len(mutated) :]

    def schedule_json(self) -> str:
        return dumps(self.schedule)

    def files(
        self, path: str | Path, example_inputs: tuple | None = None
    ) -> tuple[dict[Path, bytes | str], list[Path]]:
        """What saving to ``path`` writes (schedule JSON, weights and inputs as
        ``.safetensors`` bound to it by its hash), and the stale siblings it removes."""
        from safetensors.torch import save as st_save

        path = Path(path)
        text = self.schedule_json()
        bound = {SCHEDULE_HASH: text_hash(text)}
        files: dict[Path, bytes | str] = {path: text}
        data = self.compiled.program.weights
        if not any(t.device.type == "meta" for t in data.values()):  # meta: no weights
            files[weights_path(path)] = st_save(_unshared(data), metadata=bound)
        if example_inputs is not None:
            names = self.schedule["inputs"]
            files[inputs_path(path)] = st_save(
                _unshared(dict(zip(names, example_inputs, strict=True))), metadata=bound
            )
        return files, [p for p in schedule_files(path) if p not in files]

    def save(self, path: str | Path, example_inputs: tuple | None = None) -> Path:
        """Write the schedule JSON, its weights and inputs beside it as one transaction;
        stale weights or inputs of an earlier save are removed."""
        files, stale = self.files(path, example_inputs)
        write_files_atomic(files, remove=stale)
        return Path(path)


def _unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors, each with storage of its own (safetensors refuses shared memory,
    and exported constants such as HF's RoPE tables are often views of one tensor)."""
    out, seen = {}, set()
    for k, v in tensors.items():
        v = v.detach().contiguous()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def compile(  # noqa: A001 - the public name users expect (like torch.compile)
    module: torch.nn.Module,
    example_inputs: tuple,
    options: Options | None = None,
    *,
    emulate_bf16: bool = False,
    step_rows: int = 256,
    **overrides,
) -> CompiledModel:
    """Compile ``module``; returns a callable running on the NumPy runtime.

    ``options`` is a :class:`coec.Options` (default ``Options()``); keyword ``overrides``
    set its fields: ``target`` (a built-in name, a .toml path or a ``Target``),
    ``fusion`` (none, epilogue, dataflow), ``dtype``, ``launch``, ``max_tile``.

    ``fusion`` None is the best policy the target runs (dataflow on an RDU, epilogue on a
    GPU); ``"none"`` is the unfused baseline.
    ``dtype`` is the storage dtype bytes are counted in (bf16 or fp32); NumPy computes
    in fp32 unless ``emulate_bf16`` rounds every stored value through bf16.
    ``max_tile`` caps tile sizes (the tiling pass otherwise picks them by modeled cost).
    ``step_rows``: the runtime moves data through a phase in runs of whole tiles covering
    at least this many rows (one NumPy call per op per run; 1 = strictly tile by tile);
    counts are per tile either way.
    """
    compiled = compile_program(module, tuple(example_inputs), Options.of(options, **overrides))
    return CompiledModel(compiled, emulate_bf16=emulate_bf16, step_rows=step_rows)


def compile_onnx(
    model,
    options: Options | None = None,
    *,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    constants: dict[str, np.ndarray] | None = None,
    emulate_bf16: bool = False,
    step_rows: int = 256,
    **overrides,
) -> CompiledModel:
    """Compile an ONNX model (a path or an ``onnx.ModelProto``) like :func:`compile`.

    The graph inputs' shapes must be static, or fixed by ``input_shapes``
    (input name -> shape). ``constants`` (input name -> array) fixes graph inputs'
    values at compile time: they are no longer inputs, and what coec needs to know
    when it compiles (a reshape's shape, reduction axes, pads) may come from them.
    Call the result with NumPy arrays or tensors in the order of the remaining graph
    inputs; onnxruntime is the numerical reference.
    """
    from coec.frontend.onnx_model import load_onnx

    proto, source = load_onnx(model)
    options = Options.of(options, **overrides)
    compiled = compile_onnx_model(
        proto, options, input_shapes=input_shapes, source=source, constants=constants
    )
    return CompiledModel(compiled, emulate_bf16=emulate_bf16, step_rows=step_rows)
