"""Lean RMSNorm and SwiGLU against the modules' own forward and backward, on a small random Qwen2 (CPU, eager; the
ZeRO-3 run is in tests/integration/test_train.py, the fused GPU kernels in tests/gpu/test_fused_kernels.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from framework.train import lean_activations


def tiny(dtype: torch.dtype = torch.float32, act: str = "silu", layers: int = 3):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        hidden_act=act,
    )
    model = Qwen2ForCausalLM(config).to(dtype)
    with torch.no_grad():  # norms start at weight 1: make their gradient path non-trivial
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def loss_and_grads(model, ids) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def ids() -> torch.Tensor:
    return torch.randint(0, 97, (2, 19), generator=torch.Generator().manual_seed(3))


def test_install_replaces_every_norm_and_mlp_and_counts_them() -> None:
    model = tiny(layers=3)
    assert lean_activations.install(model) == {"rmsnorm": 2 * 3 + 1, "swiglu": 3}


def test_fp32_loss_and_every_gradient_equal_the_modules_own() -> None:
    stock = tiny()
    lean = copy.deepcopy(stock)
    lean_activations.install(lean)
    x = ids()
    loss_a, grads_a = loss_and_grads(stock, x)
    loss_b, grads_b = loss_and_grads(lean, x)
    assert torch.equal(loss_a, loss_b)  # forward is the same op sequence
    for name, g in grads_a.items():
        torch.testing.assert_close(grads_b[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_gradients_are_at_least_as_accurate_as_the_modules_own() -> None:
    """Lean backward works in fp32 where eager autograd rounds to bf16 between ops: against an fp64 run of the same
    weights, its error must not be worse than the stock bf16 error (with a little slack for rounding luck)."""
    reference = tiny(torch.float64)
    stock = tiny(torch.bfloat16)
    lean = copy.deepcopy(stock)
    lean_activations.install(lean)
    x = ids()
    _, exact = loss_and_grads(reference, x)
    _, grads_stock = loss_and_grads(stock, x)
    _, grads_lean = loss_and_grads(lean, x)
    for name, g in exact.items():
        if "norm" not in name and "mlp" not in name:
            continue
        err_stock = (grads_stock[name].double() - g).norm() / g.norm()
        err_lean = (grads_lean[name].double() - g).norm() / g.norm()
        assert err_lean <= 1.25 * err_stock + 1e-3, (name, float(err_lean), float(err_stock))


def test_an_mlp_that_is_not_swiglu_keeps_its_own_forward() -> None:
    model = tiny(act="gelu")
    assert lean_activations.install(model) == {"rmsnorm": 2 * 3 + 1, "swiglu": 0}


def test_a_model_without_supported_modules_is_refused() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    with pytest.raises(ValueError, match="lean_activations"):
        lean_activations.install(model)
