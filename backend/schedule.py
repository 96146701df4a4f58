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
import math
import os
import tempfile
from pathlib import Path

from coec.ir.errors import ConfigError, ScheduleFormatError
from coec.ir.types import DTYPES

FORMAT = "coec.schedule/1"
#: bytes per element of each storage dtype a schedule may name
DTYPE_BYTES: dict[str, int] = {name: size for name, (_, size, _) in DTYPES.items()}
_TOP_KEYS = ("format", "target", "options", "inputs", "outputs", "buffers", "kernels", "estimate")
_KERNEL_KEYS = (
    "name",
    "ops",
    "constants",
    "values",
    "phases",
    "loads",
    "stores",
    "sram_bytes",
    "estimate",
)
_TARGET_KEYS = {
    "compute": (
        "pcus",
        "pmus",
        "clock_hz",
        "matmul_flop_per_cycle_per_pcu",
        "vector_flop_per_cycle_per_pcu",
    ),
    "network": ("p2p_bandwidth_Bps",),
    "launch": ("software_s", "hardware_s", "fill_cycles_per_stage", "tile_cycles_per_stage"),
}
TIERS = ("sram", "hbm", "ddr")
#: the df ops a schedule may name (``df.`` prefix dropped)
OP_NAMES = frozenset(
    [
        "matmul",
        "elementwise",
        "reduce",
        "softmax",
        "layernorm",
        "rmsnorm",
        "attention",
        "reshape",
        "permute",
        "slice",
        "concat",
        "broadcast",
        "gather",
        "allreduce",
        "allgather",
    ]
)


def dumps(schedule: dict) -> str:
    """Deterministic text: same schedule, same bytes."""
    return json.dumps(schedule, indent=1, sort_keys=False, allow_nan=False) + "\n"


class _Check:
    """Collects the path to the offending field so the one-line error can name it."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, msg: str) -> ScheduleFormatError:
        return ScheduleFormatError(f"{self.source}: {where}: {msg}")

    def typed(self, value, kind, where: str):
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.fail(where, f"expected {getattr(kind, '__name__', kind)}, got {value!r:.60}")
        return value

    def key(self, obj: dict, key: str, kind, where: str):
        if key not in obj:
            raise self.fail(where, f"missing key '{key}'")
        return self.typed(obj[key], kind, f"{where}.{key}")

    def shape(self, value, where: str) -> list[int]:
        self.typed(value, list, where)
        for d in value:
            if isinstance(d, bool) or not isinstance(d, int) or d < 0:
                raise self.fail(where, f"bad dimension {d!r}")
        return value

    def dtype(self, value, where: str) -> str:
        if value not in DTYPE_BYTES:
            raise self.fail(where, f"unknown dtype {value!r}")
        return value


def _check_target(c: _Check, target: dict) -> None:
    from coec.backend.target import Target

    c.typed(target, dict, "target")
    for section, keys in _TARGET_KEYS.items():
        table = c.key(target, section, dict, "target")
        for k in keys:
            c.key(table, k, int | float, f"target.{section}")
    for tier in ("sram", "hbm", "ddr"):
        table = c.key(target["memory"], tier, dict, "target.memory")
        for k in ("capacity_bytes", "bandwidth_Bps"):
            c.key(table, k, int | float, f"target.memory.{tier}")
    c.key(target, "sockets", int, "target")
    c.key(target, "name", str, "target")
    if target["launch"].get("mode") not in ("software", "hardware"):
        raise c.fail("target.launch.mode", "expected 'software' or 'hardware'")
    Target.from_json(target)


def _check_dma(c: _Check, dma: dict, where: str, buffers: dict, values: dict, phases: list) -> None:
    c.typed(dma, dict, where)
    buffer = c.key(dma, "buffer", str, where)
    if buffer not in buffers:
        raise c.fail(where, f"moves unknown buffer {buffer!r}")
    value = c.key(dma, "value", str, where)
    if value not in values:
        raise c.fail(where, f"names unknown SRAM value {value!r}")
    src, dst = c.key(dma, "src", str, where), c.key(dma, "dst", str, where)
    if {src, dst} - set(TIERS) or "sram" not in (src, dst) or src == dst:
        raise c.fail(where, f"{src}->{dst} is not a transfer between SRAM and HBM/DDR")
    shape = buffers[buffer]["shape"]
    box = c.key(dma, "box", list, where)
    if len(box) != len(shape) or any(
        not (isinstance(r, list) and len(r) == 2 and 0 <= r[0] <= r[1] <= d)
        for r, d in zip(box, shape, strict=False)
    ):
        raise c.fail(where, f"box {box} is outside buffer {buffer} of shape {shape}")
    c.key(dma, "bytes", int, where)
    phase = dma.get("phase")
    if phase is not None and not (isinstance(phase, int) and 0 <= phase < len(phases)):
        raise c.fail(where, f"unknown phase {phase!r}")


def _check_kernel(c: _Check, k: dict, where: str, buffers: dict) -> None:
    c.typed(k, dict, where)
    for key in _KERNEL_KEYS:
        c.key(k, key, object, where)
    where = f"kernel {k['name']}"
    values = c.key(k, "values", dict, where)
    for name, v in values.items():
        c.shape(c.key(v, "shape", list, f"{where}.values.{name}"), f"{where}.values.{name}.shape")
        c.dtype(v.get("dtype"), f"{where}.values.{name}.dtype")
    constants = c.key(k, "constants", dict, where)
    phases = c.key(k, "phases", list, where)
    for i, ph in enumerate(phases):
        c.key(ph, "extent", int, f"{where}.phases[{i}]")
        c.key(ph, "tile", int, f"{where}.phases[{i}]")
    for i, op in enumerate(c.key(k, "ops", list, where)):
        at = f"{where}.ops[{i}]"
        if c.key(op, "op", str, at) not in OP_NAMES:
            raise c.fail(at, f"unknown op {op['op']!r}")
        for name in c.key(op, "inputs", list, at):
            if name not in values and name not in constants:
                raise c.fail(at, f"reads unknown value {name!r}")
        if c.key(op, "output", str, at) not in values:
            raise c.fail(at, f"writes unknown value {op['output']!r}")
        c.key(op, "attrs", dict, at)
    for kind in ("loads", "stores"):
        for i, dma in enumerate(c.key(k, kind, list, where)):
            _check_dma(c, dma, f"{where}.{kind}[{i}]", buffers, values, phases)


def validate(schedule: object, source: str = "<schedule>") -> dict:
    """Check everything a runtime relies on; one ScheduleFormatError naming the field otherwise."""
    c = _Check(source)
    if not isinstance(schedule, dict):
        raise ScheduleFormatError(f"{source}: not a coec schedule (top level is not an object)")
    fmt = schedule.get("format")
    if fmt != FORMAT:
        raise ScheduleFormatError(f"{source}: format {fmt!r} is not {FORMAT!r}")
    for key in _TOP_KEYS:
        c.key(schedule, key, object, "schedule")
    _check_target(c, schedule["target"])
    buffers = c.key(schedule, "buffers", dict, "schedule")
    for name, b in buffers.items():
        at = f"buffer {name}"
        c.typed(b, dict, at)
        shape = c.shape(c.key(b, "shape", list, at), f"{at}.shape")
        dtype = c.dtype(b.get("dtype"), f"{at}.dtype")
        if c.key(b, "bytes", int, at) != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise c.fail(at, f"bytes {b['bytes']} do not match shape {shape} in {dtype}")
        if b.get("tier") not in ("hbm", "ddr"):
            raise c.fail(at, f"tier {b.get('tier')!r} is not hbm or ddr")
        c.key(b, "offset", int, at)
        if b.get("kind") not in ("input", "weight", "activation"):
            raise c.fail(at, f"kind {b.get('kind')!r} is not input, weight or activation")
        live = c.key(b, "live", list, at)
        if len(live) != 2 or not all(isinstance(x, int) for x in live):
            raise c.fail(at, f"live {live} is not [first, last]")
        root = b.get("alias_of")
        if root is not None and (root not in buffers or "alias_of" in buffers[root]):
            raise c.fail(at, f"alias_of {root!r} is not a buffer with storage")
    for i, k in enumerate(c.key(schedule, "kernels", list, "schedule")):
        _check_kernel(c, k, f"kernels[{i}]", buffers)
    for key in ("inputs", "outputs"):
        for name in c.key(schedule, key, list, "schedule"):
            if name not in buffers:
                raise c.fail(key, f"unknown buffer {name!r}")
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


def write_files_atomic(files: dict[Path, bytes | str]) -> None:
    """Write every file to a temporary beside it, then rename them all.

    A failure before the renames leaves every existing file as it was. A new file gets the
    mode ``open()`` would give it (0666 less the umask), a replaced file keeps its mode:
    ``mkstemp`` alone would leave every output readable by its owner only.
    """
    temps: list[tuple[str, Path]] = []
    try:
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            raw = data.encode() if isinstance(data, str) else data
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append((tmp, path))
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                os.fchmod(f.fileno(), _mode_for(path))
        for tmp, path in temps:
            os.replace(tmp, path)
    except OSError as e:
        where = e.filename or next(iter(files), "")
        raise ConfigError(f"{where}: cannot write ({e.strerror})") from e
    finally:
        for tmp, _ in temps:
            Path(tmp).unlink(missing_ok=True)


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` should have once written."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask
