"""Fusion on a Llama-style decoder block: none vs epilogue vs dataflow (and Inductor as a peer).

    python benchmarks/fusion_block.py                 # prefill, seq 512
    python benchmarks/fusion_block.py --seq 1         # a decode-sized step
    python benchmarks/fusion_block.py --inductor      # also count Inductor's CPU kernels

Prints, per policy: kernels launched, HBM bytes, modeled time on one SN40L socket,
and the ratios against the unfused baseline, all from count-only walks of the
compiled schedules. With ``--inductor`` the same block goes through
``torch.compile`` (Inductor, CPU) and its kernels are counted as the
``cpp_fused_*`` definitions plus ``extern_kernels.*`` calls of the generated code —
the GPU-style fusion that ``epilogue`` models.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time

import torch
import torch.nn.functional as F

from coec.frontend.export import export_module
from coec.frontend.lower import lower_program
from coec.pipeline import Options, compile_lowered
from coec.runtime.executor import Executor

POLICIES = ("none", "epilogue", "dataflow")


class RMSNorm(torch.nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = torch.nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaBlock(torch.nn.Module):
    """Pre-norm attention (GQA, RoPE) + SwiGLU MLP, as in Llama 2/3."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, ffn: int, seq: int):
        super().__init__()
        self.h, self.kv, self.d = heads, kv_heads, hidden // heads
        self.norm1, self.norm2 = RMSNorm(hidden), RMSNorm(hidden)
        self.q = torch.nn.Linear(hidden, hidden, bias=False)
        self.k = torch.nn.Linear(hidden, kv_heads * self.d, bias=False)
        self.v = torch.nn.Linear(hidden, kv_heads * self.d, bias=False)
        self.o = torch.nn.Linear(hidden, hidden, bias=False)
        self.gate = torch.nn.Linear(hidden, ffn, bias=False)
        self.up = torch.nn.Linear(hidden, ffn, bias=False)
        self.down = torch.nn.Linear(ffn, hidden, bias=False)
        inv = 1.0 / (10000 ** (torch.arange(0, self.d, 2).float() / self.d))
        angles = torch.outer(torch.arange(seq).float(), inv)
        self.register_buffer("cos", torch.cat([angles.cos()] * 2, -1), persistent=False)
        self.register_buffer("sin", torch.cat([angles.sin()] * 2, -1), persistent=False)

    def rope(self, x):
        half = x.shape[-1] // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
        return x * self.cos + rotated * self.sin

    def forward(self, x):
        b, s, _ = x.shape
        y = self.norm1(x)
        q = self.q(y).view(b, s, self.h, self.d).transpose(1, 2)
        k = self.k(y).view(b, s, self.kv, self.d).transpose(1, 2)
        v = self.v(y).view(b, s, self.kv, self.d).transpose(1, 2)
        q, k = self.rope(q), self.rope(k)
        rep = self.h // self.kv
        k = k[:, :, None].expand(b, self.kv, rep, s, self.d).reshape(b, self.h, s, self.d)
        v = v[:, :, None].expand(b, self.kv, rep, s, self.d).reshape(b, self.h, s, self.d)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, s, -1))
        y = self.norm2(x)
        return x + self.down(F.silu(self.gate(y)) * self.up(y))


def inductor_kernels(model: torch.nn.Module, x: torch.Tensor) -> int:
    from torch._inductor.utils import run_and_get_code

    os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="inductor")
    with torch.no_grad():
        _, code = run_and_get_code(compiled, x)
    text = "\n".join(code)
    fused = set(re.findall(r"^(cpp_fused_\w+) = ", text, flags=re.M))
    extern = re.findall(r"extern_kernels\.\w+\(", text)
    return len(fused) + len(extern)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--target", default="sn40l")
    ap.add_argument("--inductor", action="store_true", help="also count Inductor's CPU kernels")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON")
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    model = LlamaBlock(args.hidden, args.heads, args.kv_heads, args.ffn, args.seq).eval()
    x = torch.randn(args.batch, args.seq, args.hidden)
    t0 = time.perf_counter()
    lowered = lower_program(export_module(model, (x,)), "bf16")
    export_s = time.perf_counter() - t0

    rows = {}
    for policy in POLICIES:
        for launch in ("software", "hardware"):
            t0 = time.perf_counter()
            opts = Options(target=args.target, fusion=policy, launch=launch)
            compiled = compile_lowered(lowered, opts)
            _, report = Executor(compiled.schedule, count_only=True).run()
            hbm = sum(n for p, n in report["bytes"].items() if "hbm" in p.split("->"))
            rows[(policy, launch)] = {
                "kernels": report["kernels"],
                "hbm_bytes": hbm,
                "seconds": report["seconds"],
                "flops": report["flops"],
                "compile_s": time.perf_counter() - t0,
            }

    base = rows[("none", "software")]
    print(
        f"Llama-style block: hidden {args.hidden}, heads {args.heads}/{args.kv_heads} kv, "
        f"ffn {args.ffn}, batch {args.batch} x seq {args.seq}, bf16, target {args.target} "
        f"(export+lower {export_s:.2f} s)"
    )
    print(
        f"{'policy':<10}{'launch':<10}{'kernels':>8}{'HBM MB':>10}{'time µs':>11}"
        f"{'kernels÷':>10}{'HBM÷':>8}{'speedup':>9}{'compile s':>11}"
    )
    for (policy, launch), r in rows.items():
        print(
            f"{policy:<10}{launch:<10}{r['kernels']:>8}{r['hbm_bytes'] / 1e6:>10.2f}"
            f"{r['seconds'] * 1e6:>11.1f}{base['kernels'] / r['kernels']:>10.1f}"
            f"{base['hbm_bytes'] / r['hbm_bytes']:>8.2f}{base['seconds'] / r['seconds']:>9.2f}"
            f"{r['compile_s']:>11.2f}"
        )
    print("(÷ and speedup: the unfused, software-launched baseline over each row)")
    result = {
        "config": vars(args),
        "rows": [{"policy": p, "launch": la, **r} for (p, la), r in rows.items()],
    }
    if args.inductor:
        n = inductor_kernels(model, x)
        result["inductor_kernels"] = n
        print(
            f"peer: Inductor (CPU) runs this block as {n} kernels; coec epilogue: "
            f"{rows[('epilogue', 'software')]['kernels']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
