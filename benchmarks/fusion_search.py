"""The partition search against the greedy partition it starts from, model by model.

    python benchmarks/fusion_search.py                  # zoo, examples, FFT conv, HF families
    python benchmarks/fusion_search.py --quick          # llama2-7b and the examples only
    python benchmarks/fusion_search.py --limit 10000 --json out.json

For each function coec fuses (a zoo model's embedding, decoder layer and head — the
layer once, as regional compilation does — an example, the FFT convolution, the tiny
whole models of ``benchmarks/hf_families.py``), on one socket and on an 8-socket node
(examples and HF models: one), with software and hardware launch, at the default search
limit unless ``--limit`` says otherwise: the greedy partition's modeled time, the
searched one's, the improvement, a lower bound on every partition and the gap to it
(0 when the search was exact over every partition: proven optimal on coec's cost model;
else the bound of the function as one kernel), how far the search is exact ("cut points
of the program order": the optimum of partitions into runs of that order), the kernels
it costed and the seconds it took. The searched partition is never worse.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from xdsl.dialects import func

from coec.backend.target import load_target
from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.frontend.model_file import load_model_file
from coec.ir.errors import CoecError
from coec.passes.fusion import SEARCH_LIMIT, compute_ops, partition_searched

ROOT = Path(__file__).resolve().parent.parent
ZOO = ("llama2-7b", "mistral-7b", "falcon-40b", "llama2-70b", "bloom-176b")
EXAMPLES = ("mlp.py", "gpt_block.py", "llama_block.py", "hf_llama.py")


def zoo_parts(name: str, phase: str, sockets: int):
    """(part name, module, example inputs) of a zoo model's embedding, layer and head."""
    from coec.models.zoo import instantiate
    from coec.regional import zoo_parts as parts

    return parts(instantiate(name, phase, seq=4096, batch=1, layers=1, device="meta"), sockets)


def example_parts(file: str):
    model, inputs = load_model_file(ROOT / "examples" / file)
    return [(file, model, inputs)]


def fftconv_parts():
    from coec.bench.fusion import FFTCONV_CHANNELS
    from coec.models.fftconv import MonarchFFTConv

    with torch.device("meta"):
        model = MonarchFFTConv(FFTCONV_CHANNELS, 1 << 20).eval()
        x = torch.empty(1, FFTCONV_CHANNELS, 1 << 20)
    return [("fftconv", model, (x,))]


def hf_parts(names=None):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from hf_families import FAMILIES

    torch.manual_seed(0)
    return [(f"hf {name}", *FAMILIES[name]()) for name in names or FAMILIES]


def measure(module, inputs, target, limit: int = SEARCH_LIMIT) -> dict:
    program = lower_program(export_module(module.eval(), inputs), "bf16")
    fn = next(op for op in program.module.ops if isinstance(op, func.FuncOp))
    ops = compute_ops(fn)
    start = time.perf_counter()
    groups, searched = partition_searched(ops, target, limit)
    seconds = time.perf_counter() - start
    return {
        "ops": len(ops),
        "greedy_cycles": searched.greedy_cycles,
        "searched_cycles": searched.cycles,
        "improvement": searched.greedy_cycles / max(1, searched.cycles),
        "lower_cycles": searched.lower_cycles,
        "gap": None if math.isinf(searched.gap) else searched.gap,
        "kernels": len(groups),
        "method": searched.method,
        "asked": searched.asked,
        "search_s": round(seconds, 2),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="llama2-7b and the examples only")
    ap.add_argument("--limit", type=int, default=SEARCH_LIMIT, help="kernels costed, at most")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    cases = []
    for name in ZOO[:1] if args.quick else ZOO:
        for phase in ("prefill", "decode"):
            for sockets in (1, 8):
                for part, module, inputs in zoo_parts(name, phase, sockets):
                    cases.append((f"{name} {phase} {part}", sockets, module, inputs))
    for file in EXAMPLES:
        cases += [(n, 1, m, i) for n, m, i in example_parts(file)]
    if not args.quick:
        cases += [(n, 1, m, i) for n, m, i in fftconv_parts()]
        cases += [(n, 1, m, i) for n, m, i in hf_parts()]
    rows = []
    print(
        f"{'function':34} {'sock':>4} {'launch':8} {'greedy µs':>10} {'searched µs':>11} "
        f"{'gain':>6} {'bound µs':>10} {'gap':>6} {'kern':>4} {'asked':>5} {'s':>6}  exact over"
    )
    for what, sockets, module, inputs in cases:
        base = load_target("sn40l-node" if sockets > 1 else "sn40l")
        for launch in ("software", "hardware"):
            target = base.with_launch(launch)
            row = {"function": what, "sockets": sockets, "launch": launch}
            try:
                row.update(measure(module, inputs, target, args.limit))
            except CoecError as e:  # a family coec does not lower yet
                print(f"{what:34} {sockets:>4} {launch:8} not compiled: {e}", flush=True)
                break
            clock = target.compute.clock_hz
            print(
                f"{what:34} {sockets:>4} {launch:8} {row['greedy_cycles'] / clock * 1e6:>10.1f} "
                f"{row['searched_cycles'] / clock * 1e6:>11.1f} {row['improvement']:>5.2f}x "
                f"{row['lower_cycles'] / clock * 1e6:>10.1f} "
                f"{'-' if row['gap'] is None else format(row['gap'], '.1%'):>6} "
                f"{row['kernels']:>4} {row['asked']:>5} {row['search_s']:>6.1f}  {row['method']}",
                flush=True,
            )
            assert row["searched_cycles"] <= row["greedy_cycles"]
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
