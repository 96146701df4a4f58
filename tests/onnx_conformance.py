"""ONNX conformance: onnx's own backend node tests, run through coec.

The onnx package ships the generator of its node tests (``onnx.backend.test.case.node``):
each case is a one-node model with its input and expected output arrays. This module
picks every case whose op type the coec ONNX frontend claims (``onnx_lowerings()``),
compiles it with ``coec.compile_onnx`` (fp32 storage, no fusion), runs it on the NumPy
runtime and compares it with the expected outputs. Each case ends in one of:

- ``pass``: every output has the expected shape, kind and values (tolerances per dtype);
- ``refused``: a ``CoecError`` with a one-line message (a clean, documented refusal);
- ``failed``: compiled and ran, but an output is wrong (shape, kind or values);
- ``crashed``: any other exception, or a ``CoecError`` whose message is not one line.

Inputs coec must know at compile time (a reshape's shape, reduction axes, ...) are passed
as ``constants`` when the test gives their values (``COMPILE_TIME``): the values are fixed
for the compiled model, as a torch.export graph fixes its shapes.

Generating the cases takes ~10 s; they are cached (pickled) under the pytest cache dir,
keyed by the onnx version. ``python tests/onnx_conformance.py [OP ...]`` prints the table.
"""

from __future__ import annotations

import os
import pickle
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".pytest_cache" / "d" / "onnx-conformance"

#: op type -> the inputs (by index) coec needs at compile time; the harness passes them
#: as constants (the test gives their values). Everything else is a run-time input.
COMPILE_TIME: dict[str, set[int]] = {
    "Dropout": {1, 2},
    "Reshape": {1},
    "Expand": {1},
    "Pad": {1, 2, 3},
    "Slice": {1, 2, 3, 4},
    "Split": {1},
    "Squeeze": {1},
    "Unsqueeze": {1},
    "Trilu": {1},
    "ReduceMean": {1},
    "ReduceSum": {1},
    "ReduceMax": {1},
    "ReduceMin": {1},
    "ReduceProd": {1},
    "BatchNormalization": {1, 2, 3, 4},
}

#: What coec refuses, by reason: a fragment of its one-line message -> the cases refused
#: so. A refused case not listed, a listed case that passes, or another message fails the
#: test: this table is the record of coec's refusals (docs/onnx.md explains each class).
REFUSALS: dict[str, tuple[str, ...]] = {
    "dtype FLOAT8E8M0": (
        "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0",
        "test_cast_e8m0_FLOAT8E8M0_to_FLOAT",
        "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16",
        "test_cast_e8m0_FLOAT_to_FLOAT8E8M0",
    ),
    "dtype STRING": (
        "test_equal_string",
        "test_equal_string_broadcast",
    ),
    "Dropout in training mode": (
        "test_training_dropout",
        "test_training_dropout_default",
        "test_training_dropout_default_mask",
        "test_training_dropout_mask",
    ),
    "not a tensor": (
        "test_identity_opt",
        "test_identity_sequence",
    ),
}

#: case name -> the message fragment its refusal must contain
EXPECTED_REFUSALS: dict[str, str] = {
    case: reason for reason, cases in REFUSALS.items() for case in cases
}

STATUSES = ("pass", "refused", "failed", "crashed")


@dataclass
class Case:
    name: str
    op: str
    model: onnx.ModelProto
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]


@dataclass
class Result:
    case: str
    op: str
    status: str
    message: str = ""


def _array(x) -> np.ndarray:
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


def _claimed() -> set[str]:
    from coec.frontend.registry import onnx_lowerings

    return set(onnx_lowerings())


def _generate() -> list[tuple]:
    """Every single-node case of a claimed op type (not the ``_expanded`` function bodies)."""
    import onnx.backend.test.case.node as node_cases

    from coec.frontend.onnx_ops import op_key

    claimed = _claimed()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    out = []
    for c in cases:
        nodes = c.model.graph.node
        if "_expanded" in c.name or len(nodes) != 1 or op_key(nodes[0]) not in claimed:
            continue
        for inputs, outputs in c.data_sets:
            out.append(
                (
                    c.name,
                    op_key(nodes[0]),
                    c.model.SerializeToString(),
                    [_array(x) for x in inputs],
                    [_array(x) for x in outputs],
                )
            )
    return out


def load_cases(cache: Path = CACHE, ops: set[str] | None = None) -> list[Case]:
    """The cases (generated once per onnx version and claimed op set, then read from cache)."""
    key = f"{onnx.__version__}-{len(_claimed())}"
    path = cache / f"cases-{key}.pkl"
    if path.is_file():
        raw = pickle.loads(path.read_bytes())
    else:
        raw = _generate()
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # pytest-xdist workers may race
        tmp.write_bytes(pickle.dumps(raw))
        tmp.replace(path)
    return [
        Case(name, op, onnx.ModelProto.FromString(model), inputs, outputs)
        for name, op, model, inputs, outputs in raw
        if ops is None or op in ops
    ]


def tolerance(dtype: np.dtype) -> tuple[float, float]:
    """(rtol, atol) for an expected output of ``dtype``: integers and booleans exact;
    floats onnx's own node-test tolerances (rtol 1e-3, atol 1e-7: some expected values are
    printed to 4 digits), fp16 and bf16 results compared to within their rounding."""
    if dtype.kind in "iub":
        return 0.0, 0.0
    if dtype == np.float16:
        return 1e-3, 1e-5
    if dtype.name == "bfloat16":
        return 8e-3, 1e-7
    return 1e-3, 1e-7


def _kind(dtype: np.dtype) -> str:
    """f, i or b; ml_dtypes' types (kind V) by name: bfloat16, float8_*, int4, uint2..."""
    if dtype.kind == "V":
        return "f" if dtype.name.startswith(("bfloat", "float")) else "i"
    return dtype.kind.replace("u", "i")


#: op types whose results must be exact, floats too (a cast rounds to the target type)
EXACT = frozenset({"Cast", "CastLike"})


def compare(got: np.ndarray, want: np.ndarray, exact: bool = False) -> str | None:
    """Why ``got`` is not ``want`` (None: it is, within ``tolerance`` unless ``exact``)."""
    if got.shape != want.shape:
        return f"shape {got.shape}, expected {want.shape}"
    if _kind(got.dtype) != _kind(want.dtype):
        return f"dtype {got.dtype}, expected {want.dtype}"
    rtol, atol = (0.0, 0.0) if exact else tolerance(want.dtype)
    try:
        if _kind(want.dtype) in "ib":  # exact, in the integers (float64 rounds past 2**53)
            got, want = (x.astype(np.int64) if x.dtype.kind == "V" else x for x in (got, want))
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(
                got.astype(np.float64), want.astype(np.float64), rtol, atol, equal_nan=True
            )
    except AssertionError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        return "; ".join(lines[1:4])
    return None


#: how the cases compile: fp32 storage (the expected outputs are fp32 or wider), unfused
OPTIONS = {"dtype": "fp32", "fusion": "none"}


def run_case(case: Case, options: dict | None = None) -> Result:
    """Compile ``case`` with coec (``OPTIONS``, or ``options``), run it, compare."""
    import coec
    from coec.ir.errors import CoecError

    names = [i.name for i in case.model.graph.input]
    node = case.model.graph.node[0]
    fixed = {node.input[k] for k in COMPILE_TIME.get(case.op, ()) if k < len(node.input)}
    constants = {n: x for n, x in zip(names, case.inputs, strict=True) if n in fixed}
    feeds = {n: x for n, x in zip(names, case.inputs, strict=True) if n not in fixed}
    shapes = {n: x.shape for n, x in feeds.items()}
    try:
        cm = coec.compile_onnx(
            case.model, **(options or OPTIONS), input_shapes=shapes, constants=constants
        )
        outs = cm(*feeds.values())
    except CoecError as e:
        msg = str(e)
        status = "refused" if msg and "\n" not in msg.strip() else "crashed"
        return Result(case.name, case.op, status, f"{type(e).__name__}: {msg}")
    except Exception as e:
        return Result(case.name, case.op, "crashed", f"{type(e).__name__}: {e}".splitlines()[0])
    outs = outs if isinstance(outs, tuple) else (outs,)
    if len(outs) != len(case.outputs):
        return Result(
            case.name, case.op, "failed", f"{len(outs)} outputs, expected {len(case.outputs)}"
        )
    for k, (got, want) in enumerate(zip(outs, case.outputs, strict=True)):
        why = compare(got.numpy(), want, exact=case.op in EXACT)
        if why:
            return Result(case.name, case.op, "failed", f"output {k}: {why}")
    return Result(case.name, case.op, "pass")


def run_cases(cases: list[Case], options: dict | None = None) -> list[Result]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [run_case(c, options) for c in cases]


def unexpected(results: list[Result]) -> list[str]:
    """Each result that is neither a pass nor a listed refusal with its reason, and each
    listed refusal that no longer refuses: one line per problem."""
    problems = []
    for r in results:
        reason = EXPECTED_REFUSALS.get(r.case)
        if r.status == "pass" and reason is None:
            continue
        if r.status == "refused" and reason is not None and reason in r.message:
            continue
        if r.status == "pass":
            problems.append(f"{r.case}: passes now; drop it from REFUSALS ({reason!r})")
        elif r.status == "refused":
            want = f"expected {reason!r}" if reason else "not in REFUSALS"
            problems.append(f"{r.case}: refused, {want}: {r.message}")
        else:
            problems.append(f"{r.case}: {r.status}: {r.message}")
    return problems


def table(results: list[Result]) -> str:
    """One row per op type: tests, pass, refused, failed, crashed; then the totals."""
    per: dict[str, Counter] = {}
    for r in results:
        per.setdefault(r.op, Counter())[r.status] += 1
    head = f"{'op type':<30} {'tests':>5} " + " ".join(f"{s:>7}" for s in STATUSES)
    rows = [head, "-" * len(head)]
    total: Counter = Counter()
    for op in sorted(per):
        c = per[op]
        total.update(c)
        rows.append(f"{op:<30} {c.total():>5} " + " ".join(f"{c[s]:>7}" for s in STATUSES))
    rows.append("-" * len(head))
    rows.append(f"{'total':<30} {total.total():>5} " + " ".join(f"{total[s]:>7}" for s in STATUSES))
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    ops = {a for a in argv if not a.startswith("-")} or None
    results = run_cases(load_cases(ops=ops))
    print(table(results))
    for r in results:
        if r.status != "pass" and (verbose or r.status in ("failed", "crashed")):
            print(f"{r.status:<8} {r.case}: {r.message}")
    return 0 if all(r.status in ("pass", "refused") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
