"""The schedule: the versioned JSON contract between the backend and the runtime.

A schedule is data only. Top-level keys::

    format    "coec.schedule/1"
    target    the target's parameters (so the runtime needs no TOML file)
    options   {"fusion", "dtype", "launch"}
    inputs    buffer names of the model inputs, in call order
    outputs   buffer names of the model outputs, in return order
    buffers   name -> {shape, dtype, bytes, tier, offset, kind, live, [alias_of]}
    kernels   [{name, ops, constants, values, loads, stores, sram_bytes, pmus, estimate}]
    estimate  the backend's totals (same keys as the runtime's report)

``kind`` is ``input``, ``weight`` or ``activation``; ``live`` is
``[first, last]`` kernel index (-1 = resident before the first kernel). A DMA is
``{value, buffer, src, dst, box, bytes}``: it copies ``box`` (``[start, stop]``
per dim) of ``buffer`` between tiers; ``value`` is the name in SRAM.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from coec.ir.errors import ScheduleFormatError
from coec.ir.types import DTYPES

FORMAT = "coec.schedule/1"
#: bytes per element of each storage dtype a schedule may name
DTYPE_BYTES: dict[str, int] = {name: size for name, (_, size, _) in DTYPES.items()}
_TOP_KEYS = ("format", "target", "options", "inputs", "outputs", "buffers", "kernels", "estimate")
_KERNEL_KEYS = ("name", "ops", "constants", "values", "loads", "stores", "sram_bytes", "estimate")


def dumps(schedule: dict) -> str:
    """Deterministic text: same schedule, same bytes."""
    return json.dumps(schedule, indent=1, sort_keys=False) + "\n"


def validate(schedule: object, source: str = "<schedule>") -> dict:
    """Check the structure a runtime relies on; one ScheduleFormatError otherwise."""
    if not isinstance(schedule, dict):
        raise ScheduleFormatError(f"{source}: not a coec schedule (top level is not an object)")
    fmt = schedule.get("format")
    if fmt != FORMAT:
        raise ScheduleFormatError(f"{source}: format {fmt!r} is not {FORMAT!r}")
    missing = [k for k in _TOP_KEYS if k not in schedule]
    if missing:
        raise ScheduleFormatError(f"{source}: missing key '{missing[0]}'")
    buffers = schedule["buffers"]
    for i, k in enumerate(schedule["kernels"]):
        absent = [key for key in _KERNEL_KEYS if key not in k]
        if absent:
            raise ScheduleFormatError(f"{source}: kernel {i} lacks '{absent[0]}'")
        for dma in k["loads"] + k["stores"]:
            if dma.get("buffer") not in buffers:
                raise ScheduleFormatError(
                    f"{source}: kernel {k['name']} moves unknown buffer {dma.get('buffer')!r}"
                )
    for name in schedule["inputs"] + schedule["outputs"]:
        if name not in buffers:
            raise ScheduleFormatError(f"{source}: unknown buffer {name!r} in inputs/outputs")
    return schedule


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ScheduleFormatError(f"{path}: cannot read schedule ({e.strerror})") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e
    return validate(data, str(path))


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write to a temporary file beside ``path`` and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
