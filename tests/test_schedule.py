"""The typed schedule: JSON round trip, value checks, the published JSON Schema."""

from __future__ import annotations

import ast
import copy
import json

import jsonschema
import pytest
from conftest import ROOT, load_example

import coec
from coec.backend.schedule import Schedule, dumps, load, schedule_json_schema
from coec.backend.schedule.schema import schema_text
from coec.cli import main
from coec.ir.errors import ScheduleFormatError


@pytest.fixture(scope="module")
def mlp() -> dict:
    return coec.compile(*load_example("mlp"), fusion="dataflow").schedule


@pytest.fixture(scope="module")
def emitted(mlp) -> dict[str, dict]:
    """Schedules covering every optional key: DMAs streamed and whole, views, a gather."""
    return {
        "mlp dataflow": mlp,
        "mlp none": coec.compile(*load_example("mlp")).schedule,
        "tiny-llama lm epilogue": coec.compile(
            *load_example("tiny_llama_lm"), fusion="epilogue"
        ).schedule,
    }


def test_round_trip_writes_the_same_text(emitted):
    for what, data in emitted.items():
        typed = Schedule.from_json(data, what)
        assert typed.to_json() == data, what
        assert dumps(typed) == dumps(data), what


def test_published_schema_is_the_generated_one():
    text = (ROOT / "docs" / "schedule.schema.json").read_text()
    assert text == schema_text(), (
        "docs/schedule.schema.json is stale: regenerate it with "
        "python -c 'import coec.backend.schedule.schema as s; s.write()'"
    )


def test_emitted_schedules_satisfy_the_schema(emitted):
    schema = schedule_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for what, data in emitted.items():
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(data))
        assert not errors, f"{what}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_schema_refuses_what_the_reader_refuses(mlp):
    bad = copy.deepcopy(mlp)
    next(iter(bad["buffers"].values()))["offset"] = -4096
    bad["target"]["compute"]["pcus"] = 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schedule_json_schema())


def _first_buffer(s: dict) -> dict:
    return next(iter(s["buffers"].values()))


# (what to break, the message's field, what it must say)
BAD_VALUES = [
    (lambda s: _first_buffer(s).update(offset=-4096), "buffer x.offset", "must be >= 0"),
    (lambda s: _first_buffer(s).update(shape=[8, -64]), "buffer x.shape[1]", "must be >= 0"),
    (lambda s: _first_buffer(s).update(bytes=5), "buffer x", "do not match shape"),
    (lambda s: _first_buffer(s).update(tier="flash"), "buffer x.tier", "'hbm', 'ddr'"),
    (lambda s: _first_buffer(s).update(dtype="int3"), "buffer x.dtype", "'int3' is not one of"),
    (lambda s: _first_buffer(s).update(kind="scratch"), "buffer x.kind", "is not one of"),
    (lambda s: _first_buffer(s).update(live=[3, 1]), "buffer x.live", "[first, last]"),
    (lambda s: _first_buffer(s).update(colour="red"), "buffer x", "unknown key 'colour'"),
    (lambda s: s["target"]["compute"].update(pcus=0), "target.compute.pcus", "must be >= 1"),
    (
        lambda s: s["target"]["compute"].update(clock_hz=float("nan")),
        "target.compute.clock_hz",
        "finite",
    ),
    (
        lambda s: s["target"]["memory"]["hbm"].update(bandwidth_Bps=float("inf")),
        "target.memory.hbm.bandwidth_Bps",
        "finite",
    ),
    (
        lambda s: s["target"]["memory"]["ddr"].update(bandwidth_Bps=0),
        "target.memory.ddr.bandwidth_Bps",
        "must be > 0",
    ),
    (
        lambda s: s["target"]["network"].update(p2p_bandwidth_Bps=-1.0),
        "target.network.p2p_bandwidth_Bps",
        "must be > 0",
    ),
    (lambda s: s["target"].update(sockets=0), "target.sockets", "must be >= 1"),
    (lambda s: s["target"]["launch"].update(mode="magic"), "target.launch.mode", "is not one"),
    (lambda s: s["kernels"][0]["phases"][0].update(tile=0), "kernel k0.phases[0].tile", ">= 1"),
    (lambda s: s["kernels"][0].update(sram_bytes=-1), "kernel k0.sram_bytes", ">= 0"),
    (lambda s: s["kernels"][0]["ops"][0].update(op="fft"), "kernel k0.ops[0].op", "'fft'"),
    (lambda s: s["kernels"][0]["ops"][0].update(phase=7), "kernel k0.ops[0]", "unknown phase 7"),
    (
        lambda s: s["kernels"][0]["loads"][0].update(box=[[0, 9], [0, 64]]),
        "kernel k0.loads[0]",
        "box [[0, 9], [0, 64]] is outside buffer x of shape [8, 64]",
    ),
    (
        lambda s: s["kernels"][0]["loads"][0].update(src="ddr"),
        "kernel k0.loads[0]",
        "does not reach buffer x in hbm",
    ),
    (lambda s: s["kernels"][0]["loads"][0].update(bytes=-2), "kernel k0.loads[0].bytes", ">= 0"),
    (lambda s: s.update(kernels=5), "kernels", "expected a list"),
    (lambda s: s.update(outputs=["nowhere"]), "outputs", "unknown buffer 'nowhere'"),
    (lambda s: s["options"].update(fusion="maximal"), "options.fusion", "is not one of"),
    (lambda s: s["estimate"]["peak_bytes"].pop("hbm"), "estimate.peak_bytes", "missing key 'hbm'"),
]


@pytest.mark.parametrize("case", range(len(BAD_VALUES)))
def test_bad_value_is_one_format_error_naming_the_field(mlp, case):
    breaks, where, says = BAD_VALUES[case]
    bad = copy.deepcopy(mlp)
    breaks(bad)
    with pytest.raises(ScheduleFormatError) as e:
        Schedule.from_json(bad, "s.json")
    message = str(e.value)
    assert message.startswith(f"s.json: {where}: ") and says in message, message
    assert "\n" not in message


def test_run_refuses_a_buffer_at_a_negative_offset(mlp, tmp_path, capsys):
    bad = copy.deepcopy(mlp)
    _first_buffer(bad)["offset"] = -4096
    path = tmp_path / "s.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ScheduleFormatError, match="buffer x.offset: must be >= 0, got -4096"):
        load(path)
    with pytest.raises(SystemExit) as e:
        main(["run", str(path), "--count-only"])
    assert e.value.code == ScheduleFormatError.exit_code
    assert "buffer x.offset: must be >= 0" in capsys.readouterr().err


#: what the schedule module and the runtime may import from coec (no xDSL, no torch)
ALLOWED = {
    "coec.backend.schedule",
    "coec.backend.cost",
    "coec.backend.target",
    "coec.ir.errors",
    "coec.ir.dtypes",
    "coec.runtime",
}


@pytest.mark.parametrize("folder", ["runtime", "backend/schedule"])
def test_runtime_and_schedule_import_neither_xdsl_nor_torch(folder):
    for path in sorted((ROOT / folder).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top not in ("xdsl", "torch"), f"{path.name} imports {name}"
                if top == "coec":
                    assert any(name == a or name.startswith(a + ".") for a in ALLOWED), (
                        f"{path.name} imports {name}"
                    )
