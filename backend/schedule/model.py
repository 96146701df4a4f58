"""The schedule's types: one frozen dataclass per JSON object, in the file's key order.

The annotations are the format: :mod:`codec` reads and writes JSON from them (types,
exact key sets, the values a number may take), :mod:`schema` derives the JSON Schema
from them, and :func:`check_schedule` adds what one field cannot say alone: names
that must exist, boxes inside their buffers, ``bytes`` that match ``shape``.
A field marked ``optional()`` is left out of the JSON when it is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from coec.backend.schedule.codec import LABEL, OMIT_NONE, Above, AtLeast, Invalid, read, write
from coec.ir.dtypes import DTYPE_BYTES
from coec.ir.errors import ScheduleFormatError

if TYPE_CHECKING:
    from coec.backend.cost import KernelCost
    from coec.backend.target import Target

# -- the values a field may take --------------------------------------------------------
Count = Annotated[int, AtLeast(0)]
PositiveInt = Annotated[int, AtLeast(1)]
#: a kernel index; -1 is "before the first kernel"
KernelIndex = Annotated[int, AtLeast(-1)]
NonNegative = Annotated[float, AtLeast(0)]
Positive = Annotated[float, Above(0)]

Format = Literal["coec.schedule/4"]
Dtype = Literal[
    "bf16", "f16", "f32", "f64", "i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8", "i1"
]
Tier = Literal["sram", "hbm", "ddr"]
OffChipTier = Literal["hbm", "ddr"]
BufferKind = Literal["input", "weight", "activation"]
#: the df ops a schedule may name (``df.`` prefix dropped)
OpName = Literal[
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
    "topk",
    "update",
    "allreduce",
    "allgather",
]
Bound = Literal["launch", "compute", "hbm", "ddr", "p2p", "fill"]
LaunchMode = Literal["software", "hardware", "async", "graph"]
FusionPolicy = Literal["none", "epilogue", "dataflow"]
#: a non-finite scalar constant (a ``-inf`` mask): strict JSON has no such number
NonFinite = Literal["inf", "-inf", "nan"]
Shape = tuple[Count, ...]
#: ``[start, stop]`` along one dimension
Range = tuple[Count, Count]

FORMAT: str = get_args(Format)[0]
TIERS: tuple[str, ...] = get_args(Tier)
OP_NAMES = frozenset(get_args(OpName))
assert set(get_args(Dtype)) == set(DTYPE_BYTES), "schedule dtypes differ from coec.ir.dtypes"


def optional(**metadata):
    """A field the JSON may leave out, and that is left out when None."""
    return field(default=None, metadata={OMIT_NONE: True, **metadata})


def _named(prefix: str) -> Any:
    """Name the items of a list of objects by their ``name`` (``kernel k0``)."""
    return lambda i, item: (
        f"{prefix} {item['name']}"
        if isinstance(item, dict) and isinstance(item.get("name"), str)
        else None
    )


# -- target ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ComputeSection:
    """The PCU array (``Target.compute``)."""

    pcus: PositiveInt
    pmus: PositiveInt
    clock_hz: Positive
    matmul_flop_per_cycle_per_pcu: Positive
    vector_flop_per_cycle_per_pcu: Positive
    simd_lanes: PositiveInt = 1
    matmul_tile_rows: PositiveInt = 1
    matmul_tile_cols: PositiveInt = 1


@dataclass(frozen=True)
class SramSection:
    """On-chip SRAM: its bandwidth is not a limit (0)."""

    capacity_bytes: PositiveInt
    bandwidth_Bps: NonNegative


@dataclass(frozen=True)
class OffChipSection:
    """HBM or DDR: capacity, bandwidth, and what a stream achieves of it (the fraction a
    long one sustains, the latency before the first bytes)."""

    capacity_bytes: PositiveInt
    bandwidth_Bps: Positive
    efficiency: Annotated[float, Above(0)] = 1.0
    latency_s: NonNegative = 0.0


@dataclass(frozen=True)
class MemorySection:
    """The memory tiers, fastest first."""

    sram: SramSection
    hbm: OffChipSection
    ddr: OffChipSection


@dataclass(frozen=True)
class NetworkSection:
    """The peer-to-peer link between sockets: bandwidth, and latency per ring step."""

    p2p_bandwidth_Bps: Positive
    p2p_latency_s: NonNegative


@dataclass(frozen=True)
class LaunchSection:
    """Per-kernel launch cost: serial, host (software) or on-chip (hardware) orchestrated, or
    queued (async, graph: the host issues ahead of the device; their keys are optional)."""

    mode: LaunchMode
    software_s: NonNegative
    hardware_s: NonNegative
    fill_cycles_per_stage: Count
    tile_cycles_per_stage: Count = 0
    async_issue_s: NonNegative | None = optional()
    graph_issue_s: NonNegative | None = optional()
    gap_s: NonNegative | None = optional()


@dataclass(frozen=True)
class TargetSection:
    """The target's parameters in SI units, so the runtime needs no TOML file."""

    name: str
    sockets: PositiveInt
    compute: ComputeSection
    memory: MemorySection
    network: NetworkSection
    launch: LaunchSection
    fusion_policies: tuple[FusionPolicy, ...] = ("none", "epilogue", "dataflow")
    host_copy_Bps: NonNegative = 0.0

    @classmethod
    def of(cls, target: Target) -> TargetSection:
        return read(cls, target.to_json(), "target")

    def to_target(self) -> Target:
        from coec.backend.target import Target

        return Target.from_json(write(self))


# -- buffers, values, DMAs, ops, kernels ---------------------------------------------------
@dataclass(frozen=True)
class Options:
    """How the schedule was compiled; zoo models add the model's description."""

    fusion: FusionPolicy
    dtype: Dtype
    launch: LaunchMode
    model: str | None = optional()
    phase: str | None = optional()
    batch: PositiveInt | None = optional()
    seq: PositiveInt | None = optional()
    layers: PositiveInt | None = optional()
    sockets: PositiveInt | None = optional()


@dataclass(frozen=True)
class Buffer:
    """An off-chip buffer: a model input, a weight, or an activation between kernels."""

    shape: Shape
    dtype: Dtype
    bytes: Count
    tier: OffChipTier
    offset: Count
    kind: BufferKind
    #: [first, last] kernel index; -1: resident before the first kernel
    live: tuple[KernelIndex, KernelIndex]
    #: a view sharing the storage of this buffer
    alias_of: str | None = optional()

    @property
    def storage(self) -> bool:
        """Whether the buffer has storage of its own (is not a view)."""
        return self.alias_of is None


@dataclass(frozen=True)
class Value:
    """A value in SRAM inside one kernel."""

    shape: Shape
    dtype: Dtype


@dataclass(frozen=True)
class Phase:
    """A loop over ``extent`` rows in tiles of ``tile``."""

    extent: Count
    tile: PositiveInt


@dataclass(frozen=True)
class Dma:
    """A copy of ``box`` of ``buffer`` between SRAM (as ``value``) and its tier.

    ``phase`` None: once, before the phases; otherwise tile by tile along ``axis``.
    ``chunk`` (a streamed matmul weight only): the piece moved at a time.
    """

    value: str
    buffer: str
    src: Tier
    dst: Tier
    box: tuple[Range, ...]
    bytes: Count
    phase: Count | None = None
    axis: Count | None = None
    chunk: PositiveInt | None = optional()

    @property
    def pair(self) -> str:
        """The tier pair the bytes are counted under (``hbm->sram``)."""
        return f"{self.src}->{self.dst}"


@dataclass(frozen=True)
class Op:
    """One df op of a kernel; ``axes``/``axis``: the stream axis of each input / the output."""

    op: OpName
    inputs: tuple[str, ...]
    output: str
    attrs: dict[str, Any]
    phase: Count
    axes: tuple[Count | None, ...]
    axis: Count | None
    #: a matmul weight read from its tier chunk by chunk, once per tile
    b_stream: Dma | None = optional()
    #: a table whose rows a gather reads straight from its tier
    gather_from: Dma | None = optional()
    #: an update's dest, written in place where it lives: never loaded, and only the
    #: update's rows are stored (the store's box)
    update_in: Dma | None = optional()


@dataclass(frozen=True)
class KernelEstimate:
    """The backend's cost of one kernel (``flops``, ``bytes`` by tier pair, the cost model)."""

    flops: Count
    bytes: dict[str, Count]
    cycles: Count
    seconds: NonNegative
    bound: Bound
    launch_cycles: Count
    compute_cycles: Count
    hbm_cycles: Count
    ddr_cycles: Count
    p2p_cycles: Count
    fill_cycles: Count
    stage_pcus: tuple[PositiveInt, ...]

    @classmethod
    def of(cls, flops: int, pairs: dict[str, int], cost: KernelCost) -> KernelEstimate:
        return cls(flops, dict(pairs), **cost.to_json())


@dataclass(frozen=True)
class Kernel:
    """One launch: ops streaming tiles through SRAM, phase by phase."""

    name: str
    ops: tuple[Op, ...]
    constants: dict[str, float | NonFinite]
    values: dict[str, Value]
    whole: tuple[str, ...]
    phases: tuple[Phase, ...]
    loads: tuple[Dma, ...]
    stores: tuple[Dma, ...]
    sram_bytes: Count
    pmus: PositiveInt
    estimate: KernelEstimate


@dataclass(frozen=True)
class PeakBytes:
    """The most bytes resident at once, per tier."""

    sram: Count
    hbm: Count
    ddr: Count


@dataclass(frozen=True)
class Estimate:
    """The backend's totals, with the keys of the runtime's report."""

    kernels: Count
    flops: Count
    cycles: Count
    seconds: NonNegative
    bytes: dict[str, Count]
    peak_bytes: PeakBytes


@dataclass(frozen=True)
class Schedule:
    """A whole schedule: what the backend emits and the runtime executes."""

    format: Format
    target: TargetSection
    options: Options
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    buffers: dict[str, Buffer] = field(metadata={LABEL: lambda name, b: f"buffer {name}"})
    kernels: tuple[Kernel, ...] = field(metadata={LABEL: _named("kernel")})
    estimate: Estimate

    @classmethod
    def from_json(cls, data: object, source: str = "<schedule>") -> Schedule:
        """Read and check parsed JSON; one ScheduleFormatError naming the field otherwise."""
        if not isinstance(data, dict):
            raise ScheduleFormatError(f"{source}: not a coec schedule (top level is not an object)")
        if data.get("format") != FORMAT:
            raise ScheduleFormatError(f"{source}: format {data.get('format')!r} is not {FORMAT!r}")
        try:
            schedule = read(cls, data)
            check_schedule(schedule)
        except Invalid as e:
            raise ScheduleFormatError(f"{source}: {e.where}: {e.msg}") from None
        return schedule

    def to_json(self) -> dict:
        """The JSON object (``dumps`` makes its text), keys in the format's order."""
        return write(self)

    def root(self, buffer: str) -> str:
        """The buffer holding ``buffer``'s storage (itself unless it is a view)."""
        return self.buffers[buffer].alias_of or buffer


def as_schedule(schedule: Schedule | dict) -> Schedule:
    """A typed schedule, reading (and checking) one given as parsed JSON."""
    return schedule if isinstance(schedule, Schedule) else Schedule.from_json(schedule)


# -- what no single field can say ----------------------------------------------------------
def _plain(x):
    """Tuples as lists, as the JSON shows them."""
    return [_plain(v) for v in x] if isinstance(x, tuple | list) else x


def check_schedule(s: Schedule) -> None:
    """Cross-field rules: names resolve, sizes agree, boxes fit, phases exist."""
    la = s.target.launch
    need = {"async": ("async_issue_s", "gap_s"), "graph": ("graph_issue_s", "gap_s")}
    for key in need.get(la.mode, ()):
        if getattr(la, key) is None:
            raise Invalid("target.launch", f"mode {la.mode!r} needs {key!r}")
    for name, b in s.buffers.items():
        where = f"buffer {name}"
        if b.bytes != math.prod(b.shape) * DTYPE_BYTES[b.dtype]:
            raise Invalid(
                where, f"bytes {b.bytes} do not match shape {_plain(b.shape)} in {b.dtype}"
            )
        if b.alias_of is not None and (
            b.alias_of not in s.buffers or s.buffers[b.alias_of].alias_of is not None
        ):
            raise Invalid(where, f"alias_of {b.alias_of!r} is not a buffer with storage")
        first, last = b.live
        if first > last or last > len(s.kernels):
            raise Invalid(
                f"{where}.live", f"{list(b.live)} is not [first, last] within the kernels"
            )
    for k in s.kernels:
        _check_kernel(s, k)
    for key in ("inputs", "outputs"):
        for name in getattr(s, key):
            if name not in s.buffers:
                raise Invalid(key, f"unknown buffer {name!r}")


def _check_kernel(s: Schedule, k: Kernel) -> None:
    where = f"kernel {k.name}"
    for name in k.whole:
        if name not in k.values:
            raise Invalid(f"{where}.whole", f"unknown value {name!r}")
    for i, op in enumerate(k.ops):
        at = f"{where}.ops[{i}]"
        for name in op.inputs:
            if name not in k.values and name not in k.constants:
                raise Invalid(at, f"reads unknown value {name!r}")
        if op.output not in k.values:
            raise Invalid(at, f"writes unknown value {op.output!r}")
        if len(op.axes) != len(op.inputs):
            raise Invalid(at, f"has {len(op.axes)} axes for {len(op.inputs)} inputs")
        if op.phase >= len(k.phases):
            raise Invalid(at, f"unknown phase {op.phase}")
        for key in ("b_stream", "gather_from", "update_in"):
            dma = getattr(op, key)
            if dma is not None:
                _check_dma(s, k, dma, f"{at}.{key}")
    for key in ("loads", "stores"):
        for i, dma in enumerate(getattr(k, key)):
            _check_dma(s, k, dma, f"{where}.{key}[{i}]")


def _check_dma(s: Schedule, k: Kernel, dma: Dma, where: str) -> None:
    if dma.buffer not in s.buffers:
        raise Invalid(where, f"moves unknown buffer {dma.buffer!r}")
    if dma.value not in k.values:
        raise Invalid(where, f"names unknown SRAM value {dma.value!r}")
    if "sram" not in (dma.src, dma.dst) or dma.src == dma.dst:
        raise Invalid(where, f"{dma.pair} is not a transfer between SRAM and HBM/DDR")
    buffer = s.buffers[dma.buffer]
    shape = buffer.shape
    if len(dma.box) != len(shape) or any(
        not a <= b <= d for (a, b), d in zip(dma.box, shape, strict=False)
    ):
        raise Invalid(
            where, f"box {_plain(dma.box)} is outside buffer {dma.buffer} of shape {_plain(shape)}"
        )
    tier = s.buffers[s.root(dma.buffer)].tier
    if tier not in (dma.src, dma.dst):
        raise Invalid(where, f"{dma.pair} does not reach buffer {dma.buffer} in {tier}")
    if dma.phase is not None and dma.phase >= len(k.phases):
        raise Invalid(where, f"unknown phase {dma.phase}")
    if dma.axis is not None and dma.axis >= len(shape):
        raise Invalid(
            where, f"axis {dma.axis} is outside buffer {dma.buffer} of shape {_plain(shape)}"
        )
