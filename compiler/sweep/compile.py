"""How a sweep compiles its points: each model at each shape lowered once, then per point
only the passes that depend on the target, and the layers counted once and multiplied.

- ``lower(key)`` exports and lowers a model once per ``lowering_key`` (model, phase,
  seq, batch, sockets, dtype: what the IR before fusion depends on). A zoo model's three
  parts (``coec.stitch.Parts``), or a MODEL.py's program, come back as IR text: small,
  JSON, shipped to every worker, and kept in coec's disk cache (``coec.cache``) so the
  next sweep of the same model exports nothing. Only one decoder layer is built.
- ``run_point`` parses that text once per worker process and, per point, fuses and tiles
  copies of the parts for the point's target. A zoo model's figures are those of its
  stitch of one layer and of two, extrapolated to all N: every clone of the layer is the
  same kernels (regional compilation's premise), and every counted figure is affine in
  the number of layers (tests/test_sweep.py checks each against the full stitch). The
  full N-layer stitch is compiled instead where the extrapolated HBM plan comes within a
  layer of the HBM's capacity, since there placement spills buffers to DDR and the
  layers stop being alike; so a row is what ``coec compile --zoo`` would report.

Workers need neither torch nor transformers once the lowered text is cached; after its
first point a worker's heap is frozen out of the garbage collector (``_collected_after``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
from pathlib import Path

from coec.ir.errors import CapacityError, CoecError
from coec.sweep.spec import BaseTarget, model_file, model_options, point_options

LOWERED = "coec.sweep-lowered/1"


def lowering_key(point: dict, base: BaseTarget, folder: str | Path) -> dict:
    """What a point's IR before fusion depends on; points with one key share a lowering."""
    from coec.cache import file_digest
    from coec.pipeline import Pipeline

    opts = model_options(point)
    pipeline = Pipeline(point_options(point, base))
    dtype = pipeline.options.dtype
    path = model_file(opts["model"], folder)
    if path is not None:  # a MODEL.py: its file, whatever the phase or shape
        if not path.is_file():
            return {"file": str(path), "error": f"{path}: no such model file"}
        return {"file": str(path.resolve()), "digest": file_digest(path), "dtype": dtype}
    keys = ("model", "phase", "seq", "batch")
    return {**{k: opts[k] for k in keys}, "sockets": pipeline.target.sockets, "dtype": dtype}


def lower(key: dict) -> dict:
    """The model of ``key`` exported and lowered (from the disk cache when it was before):
    ``{"parts": ..., "layers": N}`` for a zoo model, ``{"program": text}`` for a MODEL.py,
    or ``{"error": why}`` when it cannot be (every point of the key is then that row)."""
    from coec.cache import cached

    if "error" in key:
        return {"format": LOWERED, "error": key["error"]}
    return cached("sweep-lowered", key, lambda: _lower(key))


def _lower(key: dict) -> dict:
    try:
        if "file" in key:
            from coec.frontend.export import export_module
            from coec.frontend.lower import lower_program
            from coec.frontend.model_file import load_model_file
            from coec.ir import print_module

            module, inputs = load_model_file(key["file"])
            program = lower_program(export_module(module, inputs), key["dtype"])
            return {"format": LOWERED, "program": print_module(program.module)}
        from coec.models.zoo import get_arch, instantiate
        from coec.regional import lower_parts

        # the parts are the same whatever the number of layers: build one
        inst = instantiate(key["model"], key["phase"], key["seq"], key["batch"], layers=1)
        parts = lower_parts(inst, key["sockets"], key["dtype"])
        return {
            "format": LOWERED,
            "parts": parts.to_json(),
            "layers": get_arch(key["model"]).layers,
        }
    except CoecError as e:
        return {"format": LOWERED, "error": failed(e)["reason"]}


def run_point(point: dict, base: BaseTarget, lowered: dict) -> dict:
    """One point compiled count-only from its lowered model: its figures, or that it does
    not fit and why."""
    from coec.pipeline import Pipeline

    if "error" in lowered:
        return {"fits": False, "reason": lowered["error"]}
    try:
        with _collected_after():
            pipeline = Pipeline(point_options(point, base))
            if "parts" in lowered:
                report = zoo_report(_parsed(lowered["parts"]), lowered["layers"], pipeline)
            else:
                report = program_report(lowered["program"], pipeline)
    except CoecError as e:
        return failed(e)
    nbytes = report["bytes"]
    return dict(
        fits=True,
        reason="",
        seconds=report["seconds"],
        kernels=report["kernels"],
        hbm_bytes=sum(n for p, n in nbytes.items() if "hbm" in p),
        ddr_bytes=sum(n for p, n in nbytes.items() if "ddr" in p),
        p2p_bytes=nbytes.get("sram->p2p", 0),
        peak_hbm=report["peak_bytes"]["hbm"],
        peak_sram=report["peak_bytes"]["sram"],
    )


@contextlib.contextmanager
def _collected_after():
    """A point's garbage collected once, when it is done: no collection in the middle of
    it (each would walk the point's live IR), and after a process's first point what the
    process holds (torch, the parsed parts, xDSL's dialects) frozen out of the collector's
    reach (``gc.freeze``), so no later point pays a full pass over it. Measured on
    llama2-70b decode: the slowest of 96 points 0.15-0.18 s, where passes mid-point made
    it 0.22-0.55 s."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            gc.collect()
            _freeze_once()


@functools.cache
def _freeze_once() -> None:
    gc.freeze()


def failed(e: CoecError) -> dict:
    """The row of a point that does not compile (or does not fit): why."""
    reason = str(e) if isinstance(e, CapacityError) else f"{type(e).__name__}: {e}"
    return {"fits": False, "reason": reason}


def zoo_report(parts, layers: int, pipeline) -> dict:
    """The count-only report of ``layers`` layers of ``parts`` on ``pipeline``'s target:
    extrapolated from stitches of one and two layers where the plan stays in HBM."""
    from coec.stitch import stitch

    tiled = parts.clone()
    for part in tiled:
        pipeline.run(part.module, until="tile")
    sockets = pipeline.target.sockets
    if layers > 2:
        try:
            one, two = (_count(stitch(tiled, k, sockets)[0], pipeline) for k in (1, 2))
        except CoecError:  # the full stitch says which error, and where
            one = two = None
        if one and two and not (one.spilled or two.spilled):
            hbm = pipeline.target.memory["hbm"].capacity_bytes
            if one.extrapolate(two, layers + 1).hbm_top <= hbm:  # a layer to spare
                return one.extrapolate(two, layers).report
    module, _ = stitch(tiled, layers, sockets)
    return _count(module, pipeline).report


def program_report(text: str, pipeline) -> dict:
    """The count-only report of a MODEL.py's lowered program on ``pipeline``'s target."""
    from coec.pipeline import _one_socket
    from coec.runtime.executor import Executor

    _one_socket(pipeline.options)
    module = _parsed_module(text).clone()
    pipeline.run(module)
    return _report(Executor(pipeline.emit(module), count_only=True))


class _Counted:
    """A stitch's report and its HBM plan: the top address, and whether any buffer spilled."""

    def __init__(self, report: dict, hbm_top: int, spilled: bool, clock_hz: float):
        self.report, self.hbm_top, self.spilled, self.clock_hz = report, hbm_top, spilled, clock_hz

    def extrapolate(self, two: _Counted, layers: int) -> _Counted:
        """The figures of ``layers`` layers from these (one layer's) and ``two``'s: each
        count is one layer's plus (layers - 1) times what the second layer added."""

        def at(a, b):
            if isinstance(a, dict):
                return {k: at(a.get(k, 0), b.get(k, 0)) for k in sorted(set(a) | set(b))}
            return a + (layers - 1) * (b - a)

        keys = ("kernels", "flops", "cycles", "bytes", "peak_bytes")
        report = {k: at(self.report[k], two.report[k]) for k in keys}
        report["seconds"] = report["cycles"] / self.clock_hz
        # one kernel's SRAM does not add up over layers: the largest kernel's
        sram = (c.report["peak_bytes"]["sram"] for c in (self, two))
        report["peak_bytes"]["sram"] = max(sram)
        return _Counted(report, at(self.hbm_top, two.hbm_top), False, self.clock_hz)


def _count(module, pipeline) -> _Counted:
    from coec.runtime.executor import Executor

    pipeline.run(module, start="place")
    schedule = pipeline.emit(module)
    stored = [b for b in schedule["buffers"].values() if b.get("alias_of") is None]
    top = max((b["offset"] + b["bytes"] for b in stored if b["tier"] == "hbm"), default=0)
    spilled = any(b["tier"] != "hbm" for b in stored)
    executor = Executor(schedule, count_only=True)
    return _Counted(_report(executor), top, spilled, executor.target.compute.clock_hz)


def _report(executor) -> dict:
    _, report = executor.run()
    return {k: v for k, v in report.items() if k != "per_kernel"}


@functools.lru_cache(maxsize=16)
def _parts_from(text: str):
    from coec.stitch import Parts

    return Parts.from_json(json.loads(text))


def _parsed(data: dict):
    """The parts of lowered text, parsed once per process (every point clones them)."""
    return _parts_from(json.dumps(data, sort_keys=True))


@functools.lru_cache(maxsize=16)
def _parsed_module(text: str):
    from coec.ir import parse_module

    return parse_module(text, "<model>")
