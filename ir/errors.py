"""Typed errors for every stage of coec.

One root (`CoecError`) so the CLI can turn any of them into one line and an exit
code; each subclass names a kind of failure a user can act on. `assert` stays
for internal invariants only.
"""

from __future__ import annotations


class CoecError(Exception):
    """Root of every error coec raises on purpose."""

    exit_code = 1


class ConfigError(CoecError):
    """A target file, option or model file is malformed or missing."""

    exit_code = 2


class UnsupportedOpError(CoecError):
    """The model uses an operator coec cannot lower."""

    exit_code = 3


class VerifyError(CoecError):
    """The df IR breaks one of its invariants (shape, dtype, tier)."""

    exit_code = 4


class CapacityError(CoecError):
    """A memory tier is too small for what must live in it."""

    exit_code = 5

    def __init__(self, tier: str, needed: int, available: int, what: str = ""):
        self.tier, self.needed, self.available = tier, needed, available
        where = f" for {what}" if what else ""
        super().__init__(
            f"{tier.upper()} capacity exceeded{where}: needs {needed:,} bytes, "
            f"{available:,} available"
        )


class ScheduleFormatError(CoecError):
    """A schedule JSON file is corrupt, of another format or another version."""

    exit_code = 6


class ExecutionError(CoecError):
    """The runtime failed while executing a kernel of a schedule."""

    exit_code = 7
