"""Pure tensor functions run as fused GPU kernels: `torch.compile` on CUDA, eager elsewhere.

Elementwise and row-reduction math in eager PyTorch launches one kernel per op, each reading and writing its
whole tensor; at 16k tokens those tensors are hundreds of MB, so memory traffic, not arithmetic, sets their time.
Compiled, a whole function becomes one or two kernels that read each input once. Each function is compiled once
per process with dynamic shapes (sequence lengths vary) and without graph breaks; on CPU, and for empty inputs,
the same function runs eagerly, so tests on CPU check the very math the GPU runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


def fused(fn: Callable[..., Any], *tensors: Any) -> Callable[..., Any]:
    """`fn` compiled when its input `tensors` are non-empty CUDA tensors, else `fn` itself."""
    if not all(t.is_cuda and t.numel() > 0 for t in tensors):
        return fn
    if fn not in _compiled:
        import torch

        _compiled[fn] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _compiled[fn]
