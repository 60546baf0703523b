"""RMSNorm and SwiGLU that keep fewer activations for backward: `train.lean_activations`.

Without gradient checkpointing, what a decoder layer keeps for backward sets the peak memory of a long sequence.
Eager autograd keeps, per layer, each RMSNorm's fp32 copy of its input besides its bf16 output (twice per layer),
and in the SwiGLU MLP both silu(gate) and the gate itself besides up and the product. At 16k tokens in a 1.5B
Qwen2 that is about 0.5 GB per layer, 14 GB over 28 layers: the margin between fitting an 80 GB GPU and not.

Here both are autograd functions that keep only their inputs (RMSNorm: the bf16 input and one fp32 scale per
token) and recompute the rest in backward, which costs a few elementwise passes and no matmul. The math is the
modules' own: the norm in fp32, cast to the input dtype, times the weight; silu(gate) * up. On CUDA the elementwise
work of both directions runs as fused kernels (`framework.train.fused_kernels`), so the recomputation costs less than the
eager ops it replaces; elsewhere it runs eagerly.

Only the module classes listed below are replaced (their forward is known to be exactly this math); a model with
none of them is refused rather than silently left as it was. The modules keep their parameters and their hooks
(DeepSpeed ZeRO-3 gathers a weight around each module's forward and backward as before); only `forward` changes.
"""

from __future__ import annotations

import types
from typing import Any

from framework.train.fused_kernels import fused

# Classes whose forward is exactly `weight * (x.float() * rsqrt(mean(x.float()²) + eps)).to(x.dtype)`.
RMSNORM_CLASSES = frozenset({"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm"})
# Classes whose forward is exactly `down_proj(act_fn(gate_proj(x)) * up_proj(x))`; replaced when act_fn is silu.
SWIGLU_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})


# ---- the math, as pure tensor functions (fp32 inside, results in the inputs' dtypes)
def rmsnorm_forward(x: Any, weight: Any, eps: float) -> tuple[Any, Any]:
    import torch

    xf = x.float()
    rstd = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (xf * rstd).to(x.dtype), rstd


def rmsnorm_backward(dy: Any, x: Any, weight: Any, rstd: Any) -> tuple[Any, Any]:
    xf = x.float()
    normed = xf * rstd
    dweight = (dy.float() * normed.to(x.dtype).float()).reshape(-1, x.shape[-1]).sum(0)
    dnormed = (dy * weight).float()
    dx = rstd * (dnormed - normed * (dnormed * normed).mean(-1, keepdim=True))
    return dx.to(x.dtype), dweight.to(weight.dtype)


def swiglu_forward(gate: Any, up: Any) -> Any:
    import torch.nn.functional as F

    return F.silu(gate) * up


def swiglu_backward(d: Any, gate: Any, up: Any) -> tuple[Any, Any]:
    import torch

    g, df = gate.float(), d.float()
    sig = torch.sigmoid(g)
    dgate = df * up.float() * sig * (1.0 + g * (1.0 - sig))
    dup = df * g * sig
    return dgate.to(gate.dtype), dup.to(up.dtype)


def _functions() -> tuple[type, type]:
    import torch

    class LeanRMSNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: Any, weight: Any, eps: float) -> Any:
            y, rstd = fused(rmsnorm_forward, x)(x, weight, eps)
            ctx.save_for_backward(x, weight, rstd)
            return y

        @staticmethod
        def backward(ctx: Any, dy: Any) -> Any:
            x, weight, rstd = ctx.saved_tensors
            dx, dweight = fused(rmsnorm_backward, x)(dy.contiguous(), x, weight, rstd)
            return dx, dweight, None

    class LeanSwiGLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, gate: Any, up: Any) -> Any:
            ctx.save_for_backward(gate, up)
            return fused(swiglu_forward, gate)(gate, up)

        @staticmethod
        def backward(ctx: Any, d: Any) -> Any:
            gate, up = ctx.saved_tensors
            return fused(swiglu_backward, gate)(d.contiguous(), gate, up)

    return LeanRMSNorm, LeanSwiGLU


def _is_silu(act: Any) -> bool:
    import torch

    return isinstance(act, torch.nn.SiLU) or type(act).__name__ == "SiLUActivation"


def install(model: Any) -> dict[str, int]:
    """Swap the forward of every supported RMSNorm and SwiGLU MLP in `model`; returns how many of each."""
    lean_norm, lean_swiglu = _functions()

    def norm_forward(self: Any, hidden_states: Any) -> Any:
        return lean_norm.apply(hidden_states, self.weight, self.variance_epsilon)

    def mlp_forward(self: Any, x: Any) -> Any:
        return self.down_proj(lean_swiglu.apply(self.gate_proj(x), self.up_proj(x)))

    counts = {"rmsnorm": 0, "swiglu": 0}
    for module in model.modules():
        name = type(module).__name__
        if name in RMSNORM_CLASSES:
            module.forward = types.MethodType(norm_forward, module)
            counts["rmsnorm"] += 1
        elif name in SWIGLU_CLASSES and _is_silu(getattr(module, "act_fn", None)):
            module.forward = types.MethodType(mlp_forward, module)
            counts["swiglu"] += 1
    if not any(counts.values()):
        raise ValueError(
            f"train.lean_activations: {type(model).__name__} has none of the supported RMSNorm "
            f"({', '.join(sorted(RMSNORM_CLASSES))}) or SwiGLU MLP modules; leave lean_activations off for this model"
        )
    return counts
