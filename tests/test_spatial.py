"""Convolutions, pooling, batch norm, padding, cumsum and torch.gather, compared with
PyTorch: the ops CNNs, ViT/Whisper patch embeddings and RoBERTa's position ids need."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_numerics import check
from test_ops import Lambda

import coec

IMG = (torch.randn(2, 3, 9, 10),)


class Conv(torch.nn.Module):
    def __init__(self, conv: torch.nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return self.conv(x)


CONVS = {
    "3x3 pad 1": lambda: torch.nn.Conv2d(3, 5, 3, padding=1),
    "5x3 stride 2 no bias": lambda: torch.nn.Conv2d(3, 4, (5, 3), stride=2, bias=False),
    "dilated": lambda: torch.nn.Conv2d(3, 4, 3, dilation=2, padding=2),
    "grouped": lambda: torch.nn.Conv2d(3, 6, 3, groups=3, padding=1),
    "depthwise": lambda: torch.nn.Conv2d(3, 3, 3, groups=3, padding=1, stride=2),
    "1x1": lambda: torch.nn.Conv2d(3, 8, 1),
    "padding same": lambda: torch.nn.Conv2d(3, 4, 4, padding="same"),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_conv2d(name):
    check(Conv(CONVS[name]()), IMG)


def test_patch_embedding_is_movement_and_one_matmul():
    """A kernel equal to its stride (ViT): reshape + permute + matmul, no slices."""
    cm = check(Conv(torch.nn.Conv2d(3, 16, 4, stride=4)), (torch.randn(1, 3, 8, 12),))
    ops = [o["op"] for k in cm.schedule["kernels"] for o in k["ops"]]
    assert ops.count("matmul") == 1 and "slice" not in ops and "concat" not in ops
    assert cm.report["flops"] >= 2 * 6 * 16 * 48  # positions x out channels x C*k*k


def test_conv1d_like_whisper():
    check(Conv(torch.nn.Conv1d(4, 6, 3, padding=1, stride=2)), (torch.randn(2, 4, 11),))


def test_conv_im2col_flops_are_the_convolutions():
    """FLOPs counted are 2 x N x positions x O x C x k x k plus the bias adds."""
    cm = coec.compile(Conv(torch.nn.Conv2d(3, 5, 3, padding=1)), IMG, dtype="fp32")
    mm = 2 * 2 * (9 * 10) * 5 * (3 * 3 * 3)
    assert mm <= cm.report["flops"] <= mm + 2 * 9 * 10 * 5 * 2


POOLS = {
    "max 3 stride 2 pad 1": lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
    "max ceil": lambda x: F.max_pool2d(x, 2, ceil_mode=True),
    "avg 2": lambda x: F.avg_pool2d(x, 2),
    "avg 3 pad 1": lambda x: F.avg_pool2d(x, 3, stride=1, padding=1),
    "adaptive 1": lambda x: F.adaptive_avg_pool2d(x, 1),
    "adaptive even": lambda x: F.adaptive_avg_pool2d(x[..., :8], (3, 4)),
    "max 1d": lambda x: F.max_pool1d(x[:, 0], 3, stride=2),
}


@pytest.mark.parametrize("name", sorted(POOLS))
def test_pooling(name):
    check(Lambda(POOLS[name]), IMG)


def test_batch_norm_in_eval():
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    check(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), bn, torch.nn.ReLU6()), IMG)


PADS_AND_SCANS = {
    "pad": lambda x: F.pad(x, (1, 2, 0, 3), value=0.5),
    "pad crop": lambda x: F.pad(x, (-1, 2, 1, -2)),
    "cumsum last": lambda x: torch.cumsum(x, -1),
    "cumsum mid": lambda x: torch.cumsum(x, 1) * 0.5,
    "hard gates": lambda x: F.hardswish(x) + F.hardsigmoid(x) + F.leaky_relu(x, 0.1),
}


@pytest.mark.parametrize("name", sorted(PADS_AND_SCANS))
def test_padding_and_scans(name):
    check(Lambda(PADS_AND_SCANS[name]), IMG)


def test_cumsum_of_an_integer_mask_is_exact():
    """RoBERTa's position ids: cumsum of (ids != pad) times the mask, plus the pad index."""

    def positions(ids):
        mask = ids.ne(1).int()
        return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 1

    ids = torch.tensor([[0, 5, 7, 1, 1], [4, 1, 3, 9, 2]])
    cm = coec.compile(Lambda(positions), (ids,))
    assert torch.equal(cm(ids), positions(ids))


def test_torch_gather_along_each_dim():
    x = torch.randn(3, 4, 5)
    index = torch.tensor([[[0, 4, 1], [2, 2, 3]], [[1, 0, 0], [4, 3, 2]]])
    for dim in range(3):
        idx = index % x.shape[dim]
        check(Lambda(lambda t, d=dim, i=idx: torch.gather(t, d, i)), (x,))


def test_transposed_convolution_is_one_clear_error():
    with pytest.raises(coec.UnsupportedOpError, match="transposed convolution"):
        coec.compile(Conv(torch.nn.ConvTranspose2d(3, 2, 3)), IMG)


def test_hf_vision_models():
    """A tiny ResNet (conv, batch norm, max pool, mean) and ViT (patch embedding)."""
    from transformers import ResNetConfig, ResNetModel, ViTConfig, ViTModel

    torch.manual_seed(0)
    image = (torch.randn(1, 3, 32, 32),)
    resnet = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    vit = ViTModel(
        ViTConfig(
            image_size=32,
            patch_size=8,
            num_hidden_layers=1,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
        )
    )
    for model in (resnet, vit):
        model.eval()

        class Hidden(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(x).last_hidden_state

        check(Hidden(model), image, fusion="dataflow")


def test_max_pool_padding_keeps_the_schedule_strict_json(tmp_path):
    """Padding a max pool must not put -Infinity in the schedule (not JSON)."""
    import json

    x = -torch.rand(1, 2, 5, 5) - 1  # all negative: a zero pad would win the max
    cm = check(Lambda(lambda t: F.max_pool2d(t, 3, stride=2, padding=1)), (x,))
    cm.save(tmp_path / "s.json")

    def refuse(name):
        raise AssertionError(f"{name} in the schedule")

    json.loads((tmp_path / "s.json").read_text(), parse_constant=refuse)


def test_avg_pool_windows_past_the_edge_are_one_clear_error():
    """ceil_mode shrinks the divisor of the last window; coec says so instead of guessing."""
    with pytest.raises(coec.UnsupportedOpError, match="ceil mode"):
        coec.compile(Lambda(lambda t: F.avg_pool2d(t, 2, ceil_mode=True)), IMG)
