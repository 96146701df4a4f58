"""Collectives as PyTorch custom ops, so a sharded model exports them as single nodes.

A sharded module is one socket's program (SPMD). Eager PyTorch runs it as if that
socket were every socket: ``all_reduce(x)`` is the identity (a sum over one
socket) and ``all_gather(x, dim, sockets)`` repeats the shard ``sockets`` times
(the shape every socket gets). The frontend lowers them to ``df.allreduce`` and
``df.allgather``, which the runtime exchanges across sockets.
"""

from __future__ import annotations

import torch


@torch.library.custom_op("coec::all_reduce", mutates_args=())
def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


@all_reduce.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.custom_op("coec::all_gather", mutates_args=())
def all_gather(x: torch.Tensor, dim: int, sockets: int) -> torch.Tensor:
    """Every socket's ``x`` concatenated along ``dim`` in socket order."""
    return torch.cat([x] * sockets, dim=dim)


@all_gather.register_fake
def _(x: torch.Tensor, dim: int, sockets: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[dim] *= sockets
    return x.new_empty(shape)
