"""What arrives at a CoE node: when requests come and how long they are, drawn by a seed.

Synthetic arrivals are a renewal process at ``rate`` requests/s: gaps between
arrivals are exponential (Poisson arrivals, ``cv`` 1) or gamma with coefficient of
variation ``cv`` (shape 1/cv², the same mean 1/rate): cv > 1 is bursty — many short
gaps and a few long ones, the same offered load. Lengths are the coe.toml's prompt
and output tokens, or drawn uniformly within ``spread`` of them. Each quantity
draws from its own stream of the seed, so changing one leaves the others alone.
"""

from __future__ import annotations

from coec.ir.errors import ConfigError

#: the seed's streams: one per quantity drawn
_ARRIVALS, _PROMPTS, _OUTPUTS = 1, 2, 3


def _rng(seed: int, stream: int):
    import numpy as np

    return np.random.default_rng([seed, stream])


def arrival_times(n: int, rate: float, cv: float = 1.0, seed: int = 0) -> list[float]:
    """``n`` arrival times (seconds, from 0) at ``rate`` per second with gap variation ``cv``."""
    if rate <= 0 or cv <= 0:
        raise ConfigError(f"arrivals: rate and cv must be positive (rate {rate}, cv {cv})")
    rng = _rng(seed, _ARRIVALS)
    if cv == 1.0:
        gaps = rng.exponential(1.0 / rate, size=n)
    else:
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, 1.0 / (rate * shape), size=n)
    times, t = [], 0.0
    for g in gaps:
        t += float(g)
        times.append(t)
    return times


def lengths(n: int, mean: int, spread: float, seed: int, stream: int) -> list[int]:
    """``n`` token counts: ``mean`` each (spread 0), else uniform whole numbers in
    mean x [1 - spread, 1 + spread] (at least 1)."""
    if not 0 <= spread < 1:
        raise ConfigError(f"length spread {spread}: choose 0 <= spread < 1")
    if spread == 0:
        return [mean] * n
    lo, hi = max(1, round(mean * (1 - spread))), max(1, round(mean * (1 + spread)))
    return [int(x) for x in _rng(seed, stream).integers(lo, hi + 1, size=n)]


def prompt_lengths(n: int, mean: int, spread: float = 0.0, seed: int = 0) -> list[int]:
    return lengths(n, mean, spread, seed, _PROMPTS)


def output_lengths(n: int, mean: int, spread: float = 0.0, seed: int = 0) -> list[int]:
    return lengths(n, mean, spread, seed, _OUTPUTS)


def trace(
    prompts: list[str],
    rate: float,
    cv: float,
    seed: int,
    prompt_tokens: int,
    tokens: int,
    spread: float,
) -> list[dict]:
    """``prompts`` as a timed trace (the rows of a ``coec coe serve --requests`` file):
    arrivals at ``rate`` with gap variation ``cv``, lengths within ``spread`` of the means;
    times to 0.1 ms."""
    n = len(prompts)
    times = arrival_times(n, rate, cv, seed)
    p, o = prompt_lengths(n, prompt_tokens, spread, seed), output_lengths(n, tokens, spread, seed)
    return [
        {
            "t": round(times[i], 4),
            "prompt": prompts[i],
            "prompt_tokens": p[i],
            "output_tokens": o[i],
        }
        for i in range(n)
    ]
