"""The pure functions that run as fused GPU kernels: their math against PyTorch's own ops, and that each one
compiles as a single graph with dynamic shapes (what `framework.train.fused_kernels` asks of torch.compile on CUDA),
checked here with the CPU compiler; tests/gpu/test_fused_kernels.py runs them compiled on a GPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from framework.train import chunked_loss, fused_kernels, lean_activations


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cross_entropy_sum_matches_pytorchs_cross_entropy(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(37, 1000, generator=g) * 4).to(dtype)
    targets = torch.randint(0, 1000, (37,), generator=g)
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = chunked_loss._cross_entropy_function().apply(a, targets)
    theirs = F.cross_entropy(b.float(), targets, reduction="sum")  # the model's own loss: fp32 from the logits
    (ours * 0.7).backward()
    (theirs * 0.7).backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-4)
    assert a.grad.dtype == dtype
    # Both round an fp32 gradient to the logits' dtype; in bf16 an element may land one unit apart.
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 8e-3, "atol": 1e-5}
    torch.testing.assert_close(a.grad.float(), b.grad.float(), **tol)


def test_fused_runs_eagerly_on_cpu() -> None:
    x = torch.ones(3)
    assert fused_kernels.fused(lean_activations.swiglu_forward, x) is lean_activations.swiglu_forward


def _cases():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 9, 48, generator=g).bfloat16()
    w = torch.rand(48, generator=g).bfloat16() + 0.5
    _, rstd = lean_activations.rmsnorm_forward(x, w, 1e-6)
    gate, up, d = (torch.randn(2, 9, 80, generator=g).bfloat16() for _ in range(3))
    logits = torch.randn(11, 300, generator=g).bfloat16() * 3
    targets = torch.randint(0, 300, (11,), generator=g)
    _, lse = chunked_loss.cross_entropy_sum_forward(logits, targets)
    return [
        (lean_activations.rmsnorm_forward, (x, w, 1e-6)),
        (lean_activations.rmsnorm_backward, (torch.randn_like(x), x, w, rstd)),
        (lean_activations.swiglu_forward, (gate, up)),
        (lean_activations.swiglu_backward, (d, gate, up)),
        (chunked_loss.cross_entropy_sum_forward, (logits, targets)),
        (chunked_loss.cross_entropy_sum_backward, (torch.tensor(1.3), logits, targets, lse)),
    ]


@pytest.mark.timeout(600)
def test_every_fused_function_compiles_whole_with_dynamic_shapes_and_keeps_its_results() -> None:
    torch._dynamo.reset()
    for fn, args in _cases():
        compiled = torch.compile(fn, dynamic=True, fullgraph=True)  # a graph break would raise here
        got, want = compiled(*args), fn(*args)
        for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert a.dtype == b.dtype and a.shape == b.shape, fn.__name__
            torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2, msg=fn.__name__)
