"""The schedule: the versioned JSON contract between the backend and the runtime.

A schedule is data only, typed by the frozen dataclasses of :mod:`.model` (one per
JSON object, fields in the file's key order); ``Schedule.from_json`` reads and checks
one, ``Schedule.to_json`` writes it, ``dumps`` makes its text. Top-level keys::

    format    "coec.schedule/4"
    target    the target's parameters (so the runtime needs no TOML file)
    options   {"fusion", "dtype", "launch"}
    inputs    buffer names of the model inputs, in call order
    outputs   buffer names of the model outputs, in return order
    buffers   name -> {shape, dtype, bytes, tier, offset, kind, live, [alias_of]}
    kernels   [{name, ops, constants, values, whole, phases, loads, stores, sram_bytes,
              pmus, estimate}]
    estimate  the backend's totals (same keys as the runtime's report)

``kind`` is ``input``, ``weight`` or ``activation``; ``live`` is
``[first, last]`` kernel index (-1 = resident before the first kernel). A DMA is
``{value, buffer, src, dst, box, bytes, phase, axis}``: it copies ``box``
(``[start, stop]`` per dim) of ``buffer`` between tiers; ``value`` is the name in SRAM.

This package imports neither xDSL nor torch: the runtime reads it.
"""

from coec.backend.schedule.analysis import peak_occupancy, resident_bytes, summarize
from coec.backend.schedule.files import (
    dumps,
    load,
    read_schedule,
    validate,
    write_files_atomic,
)
from coec.backend.schedule.model import (
    FORMAT,
    OP_NAMES,
    TIERS,
    Buffer,
    Dma,
    Estimate,
    Kernel,
    KernelEstimate,
    Op,
    Options,
    PeakBytes,
    Phase,
    Schedule,
    TargetSection,
    Value,
    as_schedule,
)
from coec.backend.schedule.schema import schedule_json_schema
from coec.ir.dtypes import DTYPE_BYTES

__all__ = [
    "DTYPE_BYTES",
    "FORMAT",
    "OP_NAMES",
    "TIERS",
    "Buffer",
    "Dma",
    "Estimate",
    "Kernel",
    "KernelEstimate",
    "Op",
    "Options",
    "PeakBytes",
    "Phase",
    "Schedule",
    "TargetSection",
    "Value",
    "as_schedule",
    "dumps",
    "load",
    "read_schedule",
    "peak_occupancy",
    "resident_bytes",
    "schedule_json_schema",
    "summarize",
    "validate",
    "write_files_atomic",
]
