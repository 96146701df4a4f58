"""Schedule files: the deterministic text, checked reading, atomic writing."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from coec.backend.schedule.model import Schedule
from coec.ir.errors import ConfigError, ScheduleFormatError


def dumps(schedule: Schedule | dict) -> str:
    """Deterministic text: same schedule, same bytes."""
    data = schedule.to_json() if isinstance(schedule, Schedule) else schedule
    return json.dumps(data, indent=1, sort_keys=False, allow_nan=False) + "\n"


def validate(schedule: object, source: str = "<schedule>") -> dict:
    """Check everything a runtime relies on; one ScheduleFormatError naming the field otherwise.

    Returns ``schedule`` itself (the parsed JSON); ``Schedule.from_json`` gives the typed form.
    """
    Schedule.from_json(schedule, source)
    return schedule


def load(path: str | Path) -> dict:
    """A schedule file's JSON, checked (``Schedule.from_json`` of it cannot fail)."""
    _, data = _read(path)
    return validate(data, str(path))


def read_schedule(path: str | Path) -> tuple[str, dict, Schedule]:
    """A schedule file read and checked once: its text, its JSON and its typed form."""
    text, data = _read(path)
    return text, data, Schedule.from_json(data, str(path))


def _read(path: str | Path) -> tuple[str, object]:
    """The file's text and parsed JSON; one ScheduleFormatError if either fails."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ScheduleFormatError(f"{path}: cannot read schedule ({e.strerror})") from e
    try:
        return text, json.loads(text)
    except json.JSONDecodeError as e:
        raise ScheduleFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from e


def write_files_atomic(files: dict[Path, bytes | str], remove: Sequence[Path] = ()) -> None:
    """Write every file to a temporary beside it, then rename them all (and delete ``remove``:
    stale files the new ones make wrong, such as an earlier run's weights).

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
        for path in remove:
            if path not in files:
                Path(path).unlink(missing_ok=True)
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
