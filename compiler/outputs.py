"""What a command writes: checked against what it reads before any work, written as one
transaction, and bound together so that a schedule never runs on another run's data.

A schedule's weights and inputs (``out.weights.safetensors``, ``out.inputs.safetensors``
beside ``out.json``) record the SHA-256 of the schedule text they were written with, in
their safetensors metadata; ``coec run`` refuses a sibling whose hash differs, and a save
without weights or inputs removes the old ones in the same transaction.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from coec.ir.errors import ConfigError

#: the safetensors metadata key binding a data file to its schedule
SCHEDULE_HASH = "coec.schedule_sha256"


def weights_path(schedule_path: Path) -> Path:
    return Path(schedule_path).with_suffix(".weights.safetensors")


def inputs_path(schedule_path: Path) -> Path:
    return Path(schedule_path).with_suffix(".inputs.safetensors")


def schedule_files(output: Path | None) -> list[Path]:
    """Every file saving a schedule to ``output`` may write or replace."""
    return [] if output is None else [Path(output), weights_path(output), inputs_path(output)]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _same(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file (through links too); a missing file only by path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def check_outputs(outputs: Iterable[Path | None], inputs: Iterable[Path | str | None]) -> None:
    """Refuse an output that is one of the command's inputs, or two outputs at one path.

    Called before any work, so a doomed command changes nothing.
    """
    outs = [Path(o) for o in outputs if o is not None]
    ins = [Path(i) for i in inputs if i is not None and Path(i).exists()]
    for o in outs:
        if o.is_dir():
            raise ConfigError(f"{o}: is a directory, not a file to write")
        for i in ins:
            if _same(o, i):
                raise ConfigError(f"{o}: is an input of this command; refusing to overwrite it")
    for k, a in enumerate(outs):
        for b in outs[k + 1 :]:
            if _same(a, b):
                raise ConfigError(f"{a}: two outputs of this command would share this path")


def check_bound(data_file: Path, schedule_text: str, schedule: Path) -> None:
    """Refuse ``data_file`` unless it was written with this exact schedule (``schedule``)."""
    from safetensors import safe_open

    try:
        with safe_open(str(data_file), framework="numpy") as f:
            recorded = (f.metadata() or {}).get(SCHEDULE_HASH)
    except Exception as e:  # safetensors raises its own error types
        raise ConfigError(f"{data_file}: cannot read tensors ({type(e).__name__}: {e})") from e
    if recorded != text_hash(schedule_text):
        raise ConfigError(
            f"{data_file}: written with another schedule than {Path(schedule).name} "
            "(a stale file from an earlier compile); compile again with -o"
        )
