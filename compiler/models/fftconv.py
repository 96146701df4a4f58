"""A long convolution as FlashFFTConv runs it: Monarch FFTs of small factors, as matmuls.

``y = ifft(fft(x) · K)`` per channel, circular, with the filter's spectrum ``K``
computed once when the layer is built (a buffer: inference never transforms the
filter again). A length-N DFT is a Monarch product of small DFTs (Cooley-Tukey):
for N = f0·M, index n = a0 + f0·n', it is M-point DFTs over n' for each a0, a
twiddle multiply ω_N^(a0·k'), and f0-point DFTs over a0; the M-point DFTs recurse
the same way, so N = 2^20 is four stages of 32-point DFTs (32·32·32·32, twiddles
between the stages), as in FlashFFTConv and Hyena. Each f-point DFT is a matmul with
an f×f matrix, 8·f real FLOPs per complex point (the real input's first stage and
the real output's last take half): a transform costs about 8·N·Σf, not the
8·N·(N1+N2) of two dense factors.

The signal is laid out once as a tensor of its digits ``[.., f0, f1, .., f_{p-1}]``
(digit a_i of n = Σ a_i·f0·..·f_(i-1)); each stage transforms the last dim and
rotates the next digit there. The forward transform leaves its spectrum in
digit-reversed order, the pointwise product uses the filter's spectrum stored in
that order, and the inverse transform (the forward one transposed, conjugated) reads
that order and ends in natural order: no reordering pass, as FFT convolutions do it.

Complex values are (real, imaginary) pairs of real tensors, so every step is a df
matmul (``linear``), elementwise op or movement op; channels (and the batch) are
leading dims that every step carries, so the whole convolution streams along channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def monarch_factors(n: int, max_radix: int = 32) -> tuple[int, ...]:
    """Factors of a power of two ``n``: the fewest stages of at most ``max_radix`` points,
    as even as possible, larger first (2^20: 32·32·32·32; 2^12: 16·16·16; 2^9: 32·16)."""
    if n < 2 or n & (n - 1):
        raise ValueError(f"Monarch FFT length {n}: a power of two ≥ 2")
    bits, radix_bits = n.bit_length() - 1, max_radix.bit_length() - 1
    stages = -(-bits // radix_bits)
    per, extra = divmod(bits, stages)
    return tuple(1 << (per + (i < extra)) for i in range(stages))


def _digit_reversed(factors: tuple[int, ...]) -> torch.Tensor:
    """The natural index k = Σ k_s·f_(s+1)·..·f_(p-1) laid out [f_(p-1), .., f0] (k_(p-1), .., k0)."""
    p = len(factors)
    return torch.arange(math.prod(factors)).reshape(factors).permute(*reversed(range(p)))


def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


class MonarchFFTConv(torch.nn.Module):
    """Circular convolution of x [B, H, N] with a filter ``taps`` [H, N], N = ∏ ``factors``.

    ``factors`` (default ``monarch_factors(n)``) are the Monarch stages, outermost
    first. The filter (random when not given) is transformed once, here: its
    spectrum over N, digit-reversed, is the buffers ``kr``/``ki`` [H, f_(p-1), .., f0];
    ``self.taps`` keeps the time-domain filter for reference only.
    """

    def __init__(
        self,
        channels: int,
        n: int,
        factors: tuple[int, ...] | None = None,
        taps: torch.Tensor | None = None,
    ):
        super().__init__()
        self.factors = f = tuple(factors or monarch_factors(n))
        if math.prod(f) != n:
            raise ValueError(f"factors {f} do not multiply to {n}")
        self.n = n
        if taps is None:
            taps = torch.randn(channels, n) / n
        self.taps = taps
        # the inverse transform's 1/N folded in, as FlashFFTConv folds it into a twiddle
        spectrum = torch.fft.fft(taps.double()) / n
        order = _digit_reversed(f).reshape(-1)
        shape = (channels, *reversed(f))
        self.register_buffer("kr", spectrum.real[:, order].float().reshape(shape))
        self.register_buffer("ki", spectrum.imag[:, order].float().reshape(shape))
        for p, sign in (("f", -1), ("i", 1)):  # forward and inverse
            for r in sorted(set(f)):  # one DFT matrix per distinct factor
                k = torch.arange(r, dtype=torch.float64)
                angle = sign * 2 * math.pi * torch.outer(k, k) / r
                self.register_buffer(f"{p}dft{r}r", torch.cos(angle).float(), persistent=False)
                self.register_buffer(f"{p}dft{r}i", torch.sin(angle).float(), persistent=False)
            for s in range(len(f) - 1):  # the twiddles after the inner stages of stage s
                inner = math.prod(f[s + 1 :])
                a = torch.arange(f[s], dtype=torch.float64)
                k = _digit_reversed(f[s + 1 :]).to(torch.float64)
                angle = sign * 2 * math.pi * a.reshape(-1, *[1] * k.ndim) * k / (f[s] * inner)
                self.register_buffer(f"{p}tw{s}r", torch.cos(angle).float(), persistent=False)
                self.register_buffer(f"{p}tw{s}i", torch.sin(angle).float(), persistent=False)

    def _dft(self, xr, xi, p: str, r: int, real_out: bool = False):
        """r-point DFTs along the last dim: v·F, F symmetric, as ``linear`` (v·Fᵀ).

        ``xi`` None: a real signal (half the products); ``real_out``: only the real
        part is wanted (the inverse transform of a real convolution).
        """
        fr, fi = getattr(self, f"{p}dft{r}r"), getattr(self, f"{p}dft{r}i")
        if xi is None:
            return F.linear(xr, fr), F.linear(xr, fi)
        yr = F.linear(xr, fr) - F.linear(xi, fi)
        return yr, None if real_out else F.linear(xr, fi) + F.linear(xi, fr)

    def _twiddle(self, xr, xi, p: str, s: int):
        return _cmul(xr, xi, getattr(self, f"{p}tw{s}r"), getattr(self, f"{p}tw{s}i"))

    def forward(self, x):
        f, p = self.factors, len(self.factors)
        lead = x.dim() - 1
        keep = list(range(lead))
        # [.., N] -> digits [.., a0, .., a_(p-1)]: n = a0 + f0·a1 + f0·f1·a2 + ..
        x = x.reshape(*x.shape[:-1], *reversed(f))
        if p > 1:
            x = x.permute(*keep, *reversed(range(lead, lead + p)))
        xr, xi = self._dft(x, None, "f", f[-1])
        for s in reversed(range(p - 1)):  # dims [.., a0..a_s, k_(p-1)..k_(s+1)]
            xr, xi = self._twiddle(xr, xi, "f", s)
            to_end = [*keep, *(d for d in range(lead, lead + p) if d != lead + s), lead + s]
            xr, xi = self._dft(xr.permute(*to_end), xi.permute(*to_end), "f", f[s])
        # the spectrum, digit-reversed [.., k_(p-1), .., k0], times the filter's
        yr, yi = _cmul(xr, xi, self.kr, self.ki)
        for s in range(p - 1):  # the forward stages transposed, in reverse order
            yr, yi = self._dft(yr, yi, "i", f[s])
            back = [*keep, *range(lead, lead + s), lead + p - 1, *range(lead + s, lead + p - 1)]
            yr, yi = self._twiddle(yr.permute(*back), yi.permute(*back), "i", s)
        y, _ = self._dft(yr, yi, "i", f[-1], real_out=True)  # [.., a0, .., a_(p-1)]
        if p > 1:
            y = y.permute(*keep, *reversed(range(lead, lead + p)))
        return y.reshape(*y.shape[:lead], self.n)
