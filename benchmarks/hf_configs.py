"""Full-size models from their config.json files, on an 8-socket SN40L node, count-only.

    python benchmarks/hf_configs.py                     # every config coec ships
    python benchmarks/hf_configs.py qwen2-7b gemma-2-9b # some
    python benchmarks/hf_configs.py --json out.json --seq 4096 --launch hardware

For each config (``coec.models.hf_config.shipped_configs``: published config.json
values, each with its source) the model is built on the meta device with transformers'
own class, each kind of layer compiled once, sharded over the node's sockets by the
layout pass: parameters, decode time per token (one token after ``seq``), prefill time
(``seq`` tokens), peak HBM per socket (decode), kernels and compile seconds. A config
coec cannot compile yet is a row with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def measure(name: str, seq: int, target: str, launch: str) -> dict:
    from coec.commands import compile_hf_model
    from coec.ir.errors import CoecError
    from coec.models.hf_config import HFModel, read_config

    config = read_config(name)
    row = {"config": name, "family": config.model_type}
    row["params"] = HFModel.of(config, name).params()
    for phase in ("decode", "prefill"):
        start = time.perf_counter()
        try:
            r = compile_hf_model(name, phase=phase, seq=seq, target=target, launch=launch).report
        except CoecError as e:
            row["error"] = f"{phase}: {e}"
            return row
        row[f"{phase}_s"] = r["seconds"]
        row[f"{phase}_kernels"] = r["kernels"]
        row[f"{phase}_compile_s"] = round(time.perf_counter() - start, 1)
        if phase == "decode":
            row["hbm_per_socket"] = r["peak_bytes"]["hbm"]
    return row


def main(argv=None) -> int:
    from coec.models.hf_config import shipped_configs

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", help="shipped config names (default: all)")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--target", default="sn40l-node")
    ap.add_argument("--launch", default="hardware")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    names = args.configs or shipped_configs()
    print(
        f"{args.target}, seq {args.seq}, {args.launch} launch, count-only\n"
        f"{'config':20} {'family':12} {'params':>8} {'decode ms':>10} {'prefill ms':>11} "
        f"{'HBM/socket':>11} {'kernels':>9} {'compile s':>10}"
    )
    rows = []
    for name in names:
        row = measure(name, args.seq, args.target, args.launch)
        rows.append(row)
        head = f"{name:20} {row['family']:12} {row['params'] / 1e9:>7.2f}B"
        if "error" in row:
            print(f"{head}  not compiled: {row['error']}", flush=True)
            continue
        print(
            f"{head} {row['decode_s'] * 1e3:>10.2f} {row['prefill_s'] * 1e3:>11.1f} "
            f"{row['hbm_per_socket'] / 2**30:>9.2f}GB "
            f"{row['decode_kernels']:>4}/{row['prefill_kernels']:<4} "
            f"{row['decode_compile_s'] + row['prefill_compile_s']:>10.1f}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
