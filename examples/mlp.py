"""Two-layer MLP: Linear(64->128) -> ReLU -> Linear(128->32) on an (8, 64) fp32 batch.

Usage: coec compile examples/mlp.py --run
"""

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d_in: int = 64, d_hidden: int = 128, d_out: int = 32):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def model() -> nn.Module:
    torch.manual_seed(0)
    return MLP().eval()


def example_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(8, 64, generator=g),)
