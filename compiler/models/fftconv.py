"""A Monarch (FlashFFTConv-style) long convolution: FFTs as matmuls, in real arithmetic.

For a sequence of N = N1·N2 the length-N DFT factors into DFTs of size N2 along
rows, a twiddle multiply, and DFTs of size N1 along columns (Cooley-Tukey as
matrix products, the Monarch form). The convolution is
``irfft(fft(x) · fft(k))``: two Monarch transforms around a pointwise product with
the filter's spectrum. Complex values are (real, imaginary) pairs, so every step is
a df matmul or elementwise op — the shape of work FlashFFTConv runs on tensor cores.
"""

from __future__ import annotations

import math

import torch


def _dft(n: int, inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.arange(n, dtype=torch.float64)
    angle = (-1 if not inverse else 1) * 2 * math.pi * torch.outer(k, k) / n
    return torch.cos(angle).float(), torch.sin(angle).float()


def _cmatmul(ar, ai, br, bi):
    return ar @ br - ai @ bi, ar @ bi + ai @ br


def _cmul(ar, ai, br, bi):
    return ar * br - ai * bi, ar * bi + ai * br


class MonarchFFTConv(torch.nn.Module):
    """Circular convolution of x [B, H, N] with a learned filter [H, N], N = n1·n2."""

    def __init__(self, channels: int, n1: int, n2: int):
        super().__init__()
        self.n1, self.n2 = n1, n2
        n = n1 * n2
        self.filter = torch.nn.Parameter(torch.randn(channels, n) / n)
        for name, inverse in (("f", False), ("i", True)):
            c1, s1 = _dft(n1, inverse)
            c2, s2 = _dft(n2, inverse)
            j1, j2 = torch.arange(n1, dtype=torch.float64), torch.arange(n2, dtype=torch.float64)
            tw = (-1 if not inverse else 1) * 2 * math.pi * torch.outer(j1, j2) / n
            self.register_buffer(f"{name}1r", c1, persistent=False)
            self.register_buffer(f"{name}1i", s1, persistent=False)
            self.register_buffer(f"{name}2r", c2, persistent=False)
            self.register_buffer(f"{name}2i", s2, persistent=False)
            self.register_buffer(f"{name}tr", torch.cos(tw).float(), persistent=False)
            self.register_buffer(f"{name}ti", torch.sin(tw).float(), persistent=False)

    def _transform(self, xr, xi, p: str):
        """Length-N DFT of x laid out [.., N1, N2] (index n1 + N1·n2); natural order out.

        Cooley-Tukey as matrix products: a DFT of size N2 along rows, twiddles
        ω_N^(n1·k2), a DFT of size N1 along columns; out[k1, k2] is X[N2·k1 + k2].
        """
        f2r, f2i = getattr(self, f"{p}2r"), getattr(self, f"{p}2i")
        if xi is None:  # a real signal: half the products
            ar, ai = xr @ f2r, xr @ f2i
        else:
            ar, ai = _cmatmul(xr, xi, f2r, f2i)
        ar, ai = _cmul(ar, ai, getattr(self, f"{p}tr"), getattr(self, f"{p}ti"))
        return _cmatmul(getattr(self, f"{p}1r"), getattr(self, f"{p}1i"), ar, ai)

    def _layout(self, v):
        """[.., N] in natural order -> [.., N1, N2] with index n1 + N1·n2."""
        return v.reshape(*v.shape[:-1], self.n2, self.n1).transpose(-1, -2)

    def forward(self, x):
        n = self.n1 * self.n2
        xr, xi = self._transform(self._layout(x), None, "f")
        kr, ki = self._transform(self._layout(self.filter), None, "f")
        yr, yi = _cmul(xr, xi, kr, ki)
        yr, yi = yr.flatten(-2), yi.flatten(-2)  # natural order: the spectrum of the output
        out, _ = self._transform(self._layout(yr), self._layout(yi), "i")
        return out.flatten(-2) / n
