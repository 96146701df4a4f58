"""Hardware targets: the RDU (or a GPU node) as small frozen objects built from TOML.

Calculon's habit: each hardware concept is a plain class, units live in the key
names (``_GiB``, ``_GBps``) and are converted once here, and key sets are checked
exactly — an unknown or missing key is one ConfigError naming the key and file.
Every number may be written ``{ value = N, source = "..." }`` so its provenance
sits beside it; shipped targets give a source for every number.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from coec.ir.errors import ConfigError

FORMAT = "coec.target/1"
#: how kernels are launched: ``software`` (the host launches each kernel and waits: launch +
#: body, in series), ``hardware`` (the chip orchestrates itself: the same formula with its own
#: launch cost), ``async`` (the host enqueues kernels ahead of the device, as a GPU stream:
#: max(body, issue interval) + gap) and ``graph`` (the same with a CUDA Graph's issue interval)
LAUNCH_MODES = ("software", "hardware", "async", "graph")
#: the modes in which the host runs ahead of the device (a queue): launch overlaps the body
QUEUED_MODES = ("async", "graph")
#: fusion policies, weakest first: the baseline, GPU-style epilogues, SN40L streaming
FUSION_POLICIES = ("none", "epilogue", "dataflow")
_CAPACITY_KEYS = ("capacity_MiB", "capacity_GiB", "capacity_TiB")
_UNITS = {"MiB": 2**20, "GiB": 2**30, "TiB": 2**40, "GBps": 1e9, "GHz": 1e9, "us": 1e-6}


@dataclass(frozen=True)
class Compute:
    """The PCU array: how many units, how fast, how much each does per cycle."""

    pcus: int
    pmus: int
    clock_hz: float
    matmul_flop_per_cycle_per_pcu: float
    vector_flop_per_cycle_per_pcu: float
    simd_lanes: int = 1
    #: a matmul's output is cut into tiles of these rows x cols, dealt to the PCUs in waves
    #: (1 x 1: no wave quantization)
    matmul_tile_rows: int = 1
    matmul_tile_cols: int = 1

    @property
    def peak_matmul_flops(self) -> float:
        return self.pcus * self.matmul_flop_per_cycle_per_pcu * self.clock_hz


@dataclass(frozen=True)
class Memory:
    """One memory tier: capacity in bytes and bandwidth in bytes/s (0: not a limit).

    What a kernel's stream achieves (Hockney's model): ``latency_s`` before the first
    bytes arrive, then ``efficiency`` of the datasheet bandwidth — so small transfers
    fall short of peak and long ones approach ``efficiency`` of it.
    """

    tier: str
    capacity_bytes: int
    bandwidth_Bps: float
    efficiency: float = 1.0
    latency_s: float = 0.0

    @property
    def achievable_Bps(self) -> float:
        """The bandwidth a long stream sustains."""
        return self.bandwidth_Bps * self.efficiency


@dataclass(frozen=True)
class Network:
    """The peer-to-peer link: bandwidth per socket and latency per ring step."""

    p2p_bandwidth_Bps: float
    p2p_latency_s: float = 0.0


@dataclass(frozen=True)
class Launch:
    """Per-kernel launch cost: serial (``software``: host, ``hardware``: on-chip orchestrated)
    or queued (``async``, ``graph``: the host issues kernels ahead of the device).

    The queued modes' keys are optional: a target without them cannot run in that mode.
    """

    mode: str
    software_s: float
    hardware_s: float
    fill_cycles_per_stage: int
    tile_cycles_per_stage: int = 0
    #: queued modes: seconds between two kernel issues by the host (asynchronous stream)
    async_issue_s: float | None = None
    #: the same when a CUDA Graph is replayed
    graph_issue_s: float | None = None
    #: queued modes: idle device time between one kernel's end and the next's start
    gap_s: float | None = None

    @property
    def queued(self) -> bool:
        """Whether the host runs ahead of the device, so launch overlaps the kernel body."""
        return self.mode in QUEUED_MODES

    @property
    def seconds(self) -> float:
        """Serial modes: the launch cost paid before every kernel. Queued modes: the issue
        interval (what a kernel costs at least, before the gap)."""
        return {
            "software": self.software_s,
            "hardware": self.hardware_s,
            "async": self.async_issue_s,
            "graph": self.graph_issue_s,
        }[self.mode]

    def missing(self, mode: str) -> list[str]:
        """The TOML keys ``mode`` needs that this target does not give."""
        need = {"async": ("async_issue", "gap"), "graph": ("graph_issue", "gap")}.get(mode, ())
        return [f"{k}_us" for k in need if getattr(self, f"{k}_s") is None]


@dataclass(frozen=True)
class Host:
    """The path an expert's weights take into a device's HBM, as a small topology.

    Each device has its own link (a GPU's PCIe x16; an SN40L socket's DDR->HBM DMA);
    ``devices_per_uplink`` devices share one uplink of ``uplink_Bps`` (a PCIe switch's
    link to the CPU; 0: no shared uplink); every copy reads the node's source memory
    (host DRAM; an SN40L node's DDR) of ``dram_Bps`` in all (0: not a limit); a DMA
    reaches ``dma_efficiency`` of the slowest of these. "One host link for the node"
    is ``devices_per_uplink`` = the node's devices; "a link per device" is 1.
    """

    link_Bps: float
    devices_per_uplink: int = 1
    uplink_Bps: float = 0.0
    dram_Bps: float = 0.0
    dma_efficiency: float = 1.0
    copy_from: str = "host"  # host: host memory over PCIe; ddr: the device's own DDR

    def device_Bps(self, copying: int) -> float:
        """One device's copy rate while ``copying`` devices of the node copy at once.

        min(link, uplink / devices copying through it, DRAM / devices copying) x
        efficiency; the copying devices fill uplinks in turn (exact for one device
        and for all of them, the two cases serving has).
        """
        rates = [self.link_Bps]
        if self.uplink_Bps:
            rates.append(self.uplink_Bps / min(self.devices_per_uplink, copying))
        if self.dram_Bps:
            rates.append(self.dram_Bps / copying)
        return min(rates) * self.dma_efficiency

    def node_Bps(self, copying: int) -> float:
        """The node's copy rate while ``copying`` devices copy at once (each its shard)."""
        return copying * self.device_Bps(copying)

    def reading(self, devices: int) -> str:
        """Which reading of the topology this is, in words (the bench reports it)."""
        if self.copy_from == "ddr":
            return "own DDR"
        share = min(self.devices_per_uplink, devices)
        if self.uplink_Bps and share >= devices:
            return "one host link"
        if self.uplink_Bps and share > 1 and self.uplink_Bps / share < self.link_Bps:
            return f"{share} per uplink"
        return "link per device"


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    sockets: int
    compute: Compute
    memory: dict[str, Memory]
    network: Network
    launch: Launch
    sources: dict[str, str]
    #: fusion policies this hardware can run (GPUs: no cross-SM streaming, so no dataflow)
    fusion_policies: tuple[str, ...] = FUSION_POLICIES
    #: the expert-copy path into HBM ([host] in the file; None: none declared)
    host: Host | None = None

    @property
    def host_copy_Bps(self) -> float:
        """One device's host->device link, bytes/s (0: none declared, or copies from DDR)."""
        return self.host.link_Bps if self.host and self.host.copy_from == "host" else 0.0

    def copy_path(self) -> Host:
        """The expert-copy path: [host], or without it each socket's DDR at its bandwidth."""
        if self.host:
            return self.host
        return Host(self.memory["ddr"].bandwidth_Bps, copy_from="ddr")

    def with_launch(self, mode: str) -> Target:
        if mode not in LAUNCH_MODES:
            raise ConfigError(f"launch mode {mode!r}: expected one of {', '.join(LAUNCH_MODES)}")
        missing = self.launch.missing(mode)
        if missing:
            raise ConfigError(
                f"launch mode {mode!r}: target {self.name} gives no [launch] {', '.join(missing)}"
            )
        return replace(self, launch=replace(self.launch, mode=mode))

    def to_json(self) -> dict:
        """The parameters a schedule carries so the runtime needs no TOML file."""
        c, n, la = self.compute, self.network, self.launch
        return {
            "name": self.name,
            "sockets": self.sockets,
            "compute": {
                "pcus": c.pcus,
                "pmus": c.pmus,
                "clock_hz": c.clock_hz,
                "matmul_flop_per_cycle_per_pcu": c.matmul_flop_per_cycle_per_pcu,
                "vector_flop_per_cycle_per_pcu": c.vector_flop_per_cycle_per_pcu,
                "simd_lanes": c.simd_lanes,
                "matmul_tile_rows": c.matmul_tile_rows,
                "matmul_tile_cols": c.matmul_tile_cols,
            },
            "memory": {
                t: {
                    "capacity_bytes": m.capacity_bytes,
                    "bandwidth_Bps": m.bandwidth_Bps,
                    **(
                        {"efficiency": m.efficiency, "latency_s": m.latency_s}
                        if t != "sram"
                        else {}
                    ),
                }
                for t, m in self.memory.items()
            },
            "network": {
                "p2p_bandwidth_Bps": n.p2p_bandwidth_Bps,
                "p2p_latency_s": n.p2p_latency_s,
            },
            "launch": {
                "mode": la.mode,
                "software_s": la.software_s,
                "hardware_s": la.hardware_s,
                "fill_cycles_per_stage": la.fill_cycles_per_stage,
                "tile_cycles_per_stage": la.tile_cycles_per_stage,
                **{
                    k: getattr(la, k)
                    for k in ("async_issue_s", "graph_issue_s", "gap_s")
                    if getattr(la, k) is not None
                },
            },
            "fusion_policies": list(self.fusion_policies),
            # the runtime needs no copy topology: a schedule keeps the host link alone
            "host_copy_Bps": self.host_copy_Bps,
        }

    @classmethod
    def from_json(cls, d: dict) -> Target:
        return cls(
            name=d["name"],
            description="",
            sockets=d["sockets"],
            compute=Compute(**d["compute"]),
            memory={t: Memory(t, **m) for t, m in d["memory"].items()},
            network=Network(**d["network"]),
            launch=Launch(**d["launch"]),
            sources={},
            fusion_policies=tuple(d.get("fusion_policies", FUSION_POLICIES)),
            host=Host(d["host_copy_Bps"]) if d.get("host_copy_Bps") else None,
        )


# -- loading -----------------------------------------------------------------------------
class _Table:
    """Reads one TOML table, checking keys exactly and converting units once."""

    def __init__(self, data: dict, where: str, file: str, sources: dict[str, str]):
        self.data, self.where, self.file, self.sources = data, where, file, sources
        self.used: set[str] = set()

    def _fail(self, msg: str) -> ConfigError:
        where = f" [{self.where}]" if self.where else ""
        return ConfigError(f"{self.file}:{where} {msg}")

    def _missing(self, key: str) -> ConfigError:
        """A missing key, naming the given key it was probably meant to be."""
        close = difflib.get_close_matches(key, [k for k in self.data if k not in self.used], n=1)
        hint = f" ('{close[0]}' given: a misspelling?)" if close else ""
        return self._fail(f"missing key '{key}'{hint}")

    def table(self, key: str) -> _Table:
        self.used.add(key)
        value = self.data.get(key)
        if not isinstance(value, dict):
            raise self._fail(f"missing table '{key}'")
        return _Table(value, f"{self.where}.{key}".strip("."), self.file, self.sources)

    def text(self, key: str, choices: tuple[str, ...] | None = None) -> str:
        self.used.add(key)
        value = self.data.get(key)
        if not isinstance(value, str):
            raise self._fail(f"missing or non-string key '{key}'")
        if choices and value not in choices:
            raise self._fail(f"'{key}' = {value!r}: expected one of {', '.join(choices)}")
        return value

    def texts(self, key: str, choices: tuple[str, ...], default: tuple[str, ...]) -> tuple:
        """An optional list of strings from ``choices`` (``{value, source}`` allowed)."""
        if key not in self.data:
            return default
        self.used.add(key)
        raw = self.data[key]
        if isinstance(raw, dict) and set(raw) <= {"value", "source"} and "value" in raw:
            if "source" in raw:
                self.sources[f"{self.where}.{key}".strip(".")] = str(raw["source"])
            raw = raw["value"]
        if not isinstance(raw, list) or not raw or any(v not in choices for v in raw):
            raise self._fail(f"'{key}' must be a non-empty list from {', '.join(choices)}")
        return tuple(raw)

    def number(self, key: str, *, integer: bool = False, positive: bool = True) -> float:
        """`key` in its unit (the key's suffix), converted to SI; `{value, source}` allowed."""
        self.used.add(key)
        if key not in self.data:
            raise self._missing(key)
        raw = self.data[key]
        if isinstance(raw, dict):
            extra = set(raw) - {"value", "source"}
            if extra or "value" not in raw:
                raise self._fail(f"'{key}' must be a number or {{ value = N, source = \"...\" }}")
            if "source" in raw:
                self.sources[f"{self.where}.{key}".strip(".")] = str(raw["source"])
            raw = raw["value"]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
            raise self._fail(f"'{key}' must be a finite number, got {raw!r}")
        if (positive and raw <= 0) or raw < 0:
            raise self._fail(f"'{key}' must be {'positive' if positive else '>= 0'}, got {raw}")
        if integer and raw != int(raw):
            raise self._fail(f"'{key}' must be a whole number, got {raw}")
        unit = key.rsplit("_", 1)[-1]
        return raw * _UNITS.get(unit, 1)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self._fail(f"unknown key '{unknown[0]}'")


def _memory(t: _Table, tier: str, *, bandwidth: bool) -> Memory:
    m = t.table(tier)
    cap_key = next((k for k in m.data if k.startswith("capacity_")), "capacity_GiB")
    if cap_key not in _CAPACITY_KEYS:
        raise m._fail(f"'{cap_key}': capacity is given as one of {', '.join(_CAPACITY_KEYS)}")
    mem = Memory(
        tier=tier,
        capacity_bytes=int(m.number(cap_key)),
        bandwidth_Bps=m.number("bandwidth_GBps") if bandwidth else 0.0,
    )
    if bandwidth:  # optional: what a stream achieves (default: the datasheet, at once)
        if "efficiency" in m.data:
            eff = m.number("efficiency")
            if eff > 1:
                raise m._fail(f"'efficiency' is a fraction of the bandwidth, got {eff}")
            mem = replace(mem, efficiency=eff)
        if "latency_us" in m.data:
            mem = replace(mem, latency_s=m.number("latency_us", positive=False))
    m.done()
    return mem


def parse_target(data: dict, file: str) -> Target:
    sources: dict[str, str] = {}
    top = _Table(data, "", file, sources)
    fmt = top.text("format")
    if fmt != FORMAT:
        raise ConfigError(f"{file}: format {fmt!r} is not {FORMAT!r}")
    name, description = top.text("name"), top.text("description")
    sockets = int(top.number("sockets", integer=True))

    c = top.table("compute")
    compute = Compute(
        pcus=int(c.number("pcus", integer=True)),
        pmus=int(c.number("pmus", integer=True)),
        clock_hz=c.number("clock_GHz"),
        matmul_flop_per_cycle_per_pcu=c.number("matmul_flop_per_cycle_per_pcu"),
        vector_flop_per_cycle_per_pcu=c.number("vector_flop_per_cycle_per_pcu"),
        simd_lanes=int(c.number("simd_lanes", integer=True)),
        **{
            k: int(c.number(k, integer=True))
            for k in ("matmul_tile_rows", "matmul_tile_cols")
            if k in c.data
        },
    )
    c.done()

    mem = top.table("memory")
    memory = {
        "sram": _memory(mem, "sram", bandwidth=False),
        "hbm": _memory(mem, "hbm", bandwidth=True),
        "ddr": _memory(mem, "ddr", bandwidth=True),
    }
    mem.done()

    n = top.table("network")
    network = Network(
        p2p_bandwidth_Bps=n.number("p2p_bandwidth_GBps"),
        p2p_latency_s=n.number("p2p_latency_us", positive=False),
    )
    n.done()

    la = top.table("launch")
    launch = Launch(
        mode=la.text("mode", LAUNCH_MODES),
        software_s=la.number("software_us", positive=False),
        hardware_s=la.number("hardware_us", positive=False),
        fill_cycles_per_stage=int(la.number("fill_cycles_per_stage", integer=True, positive=False)),
        tile_cycles_per_stage=int(la.number("tile_cycles_per_stage", integer=True, positive=False)),
        **{
            f"{k}_s": la.number(f"{k}_us", positive=False)
            for k in ("async_issue", "graph_issue", "gap")
            if f"{k}_us" in la.data
        },
    )
    missing = launch.missing(launch.mode)
    if missing:
        raise la._fail(f"mode = {launch.mode!r} needs '{missing[0]}'")
    la.done()
    fusion = top.texts("fusion", ("none", "epilogue", "dataflow"), ("none", "epilogue", "dataflow"))
    host = _host(top.table("host"), sockets) if "host" in data else None
    top.done()
    return Target(
        name, description, sockets, compute, memory, network, launch, sources, fusion, host
    )


def _host(h: _Table, sockets: int) -> Host:
    """[host]: the expert-copy topology, or (older files) ``copy_GBps`` alone: a link each."""
    if "copy_GBps" in h.data:
        host = Host(h.number("copy_GBps"))
        h.done()
        return host
    host = Host(
        link_Bps=h.number("link_GBps"),
        devices_per_uplink=int(h.number("devices_per_uplink", integer=True)),
        uplink_Bps=h.number("uplink_GBps", positive=False),
        dram_Bps=h.number("dram_GBps", positive=False),
        dma_efficiency=h.number("dma_efficiency"),
        copy_from=h.text("copy_from", ("host", "ddr")),
    )
    if host.dma_efficiency > 1:
        raise h._fail(f"'dma_efficiency' must be at most 1, got {host.dma_efficiency}")
    if host.devices_per_uplink > sockets:
        raise h._fail(
            f"'devices_per_uplink' = {host.devices_per_uplink}: the node has {sockets} devices"
        )
    h.done()
    return host


def read_toml(path: str | Path, what: str = "") -> dict:
    """A TOML file's data; an unreadable or invalid file is one ConfigError naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what or 'it'} ({e.strerror})") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from e


def builtin_targets() -> list[str]:
    folder = resources.files("coec.backend") / "targets"
    return sorted(p.name[: -len(".toml")] for p in folder.iterdir() if p.name.endswith(".toml"))


def target_data(spec: str | Path) -> tuple[dict, str]:
    """The parsed TOML of a built-in target by name or a user's target file by path, and
    the name errors give it."""
    spec = str(spec)
    if spec in builtin_targets():
        text = (resources.files("coec.backend") / "targets" / f"{spec}.toml").read_text()
        return tomllib.loads(text), f"{spec}.toml"
    path = Path(spec)
    if not path.suffix == ".toml" and not path.exists():
        raise ConfigError(
            f"unknown target {spec!r}: built-in targets are {', '.join(builtin_targets())}, "
            "or give a path to a .toml file"
        )
    return read_toml(path, "target file"), str(path)


def load_target(spec: str | Path | Target) -> Target:
    """A built-in target by name (``sn40l``) or a user's TOML file by path."""
    if isinstance(spec, Target):
        return spec
    return parse_target(*target_data(spec))
