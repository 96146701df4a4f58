"""How fast is coec itself? Compile time of full-size models, and the runtime against PyTorch.

    python benchmarks/tool_speed.py                  # both parts
    python benchmarks/tool_speed.py --skip-runtime   # compile times only

1. Count-only compilation (meta device, no weights) of llama2-70b prefill (seq 4096) on an
   8-socket node,
   and of 1-, 8-, 32- and 80-layer variants: regional compilation should make the
   time grow far slower than the layer count.
2. The NumPy runtime executing a GPT-2-small-sized model (HuggingFace
   ``GPT2LMHeadModel``, random weights) against PyTorch eager on the same inputs,
   as a ratio measured in one run (best of a few repeats each).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch


def compile_times(
    model: str, phase: str, seq: int, fusion: str, target: str
) -> list[tuple[int, float]]:
    from coec.commands import compile_zoo_model
    from coec.models.zoo import get_arch

    rows = []
    full = get_arch(model).layers
    # warm up once (imports, torch.export's first-call setup), so rows compare like with like
    compile_zoo_model(model, phase=phase, seq=seq, layers=1, fusion=fusion, target=target)
    for layers in sorted({1, 8, 32, full}):
        t0 = time.perf_counter()
        result = compile_zoo_model(
            model, phase=phase, seq=seq, layers=layers, fusion=fusion, target=target
        )
        dt = time.perf_counter() - t0
        rows.append((layers, dt))
        print(
            f"  {model} {phase} seq {seq} on {target}, {layers:>3} layers, fusion {fusion}: "
            f"compile+count "
            f"{dt:6.2f} s  ({result.report['kernels']} kernels, modeled "
            f"{result.report['seconds'] * 1e3:.2f} ms)"
        )
    (l0, t0_), (l1, t1_) = rows[0], rows[-1]
    print(f"  growth: {(t1_ - t0_) / (l1 - l0) * 1e3:.1f} ms per extra layer")
    return rows


def runtime_vs_eager(seq: int, repeats: int, fusion: str) -> float:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import GPT2Config, GPT2LMHeadModel

    import coec

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(use_cache=False, attn_implementation="eager")).eval()
    ids = torch.randint(0, model.config.vocab_size, (1, seq))
    cm = coec.compile(model, (ids,), fusion=fusion, dtype="fp32")
    cm(ids)  # warm up both
    with torch.no_grad():
        model(ids)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    ours = best(lambda: cm(ids))
    with torch.no_grad():
        eager = best(lambda: model(ids))
    print(
        f"  GPT-2 small (124M), seq {seq}, fusion {fusion}: NumPy runtime {ours * 1e3:.1f} ms, "
        f"PyTorch eager {eager * 1e3:.1f} ms, ratio {ours / eager:.2f}x"
    )
    return ours / eager


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama2-70b")
    ap.add_argument("--phase", default="prefill", choices=["prefill", "decode"])
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--fusion", default="dataflow")
    ap.add_argument("--target", default="sn40l-node", help="8 sockets, tensor parallel")
    ap.add_argument("--runtime-seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-runtime", action="store_true")
    args = ap.parse_args(argv)
    print(f"threads: torch {torch.get_num_threads()}, cores {os.cpu_count()}")
    print("count-only compilation (meta device):")
    compile_times(args.model, args.phase, args.seq, args.fusion, args.target)
    if not args.skip_runtime:
        print("runtime against PyTorch eager (same inputs, one run):")
        for fusion in ("none", "dataflow"):
            runtime_vs_eager(args.runtime_seq, args.repeats, fusion)


if __name__ == "__main__":
    main(sys.argv[1:])
