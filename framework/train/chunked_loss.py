"""A causal-LM loss that never holds the whole sequence's logits: `train.loss_chunk_tokens`.

At 16k tokens and a 152k-token vocabulary, the model's own loss materializes the logits (5 GB in bf16), their fp32
copy and log-softmax (10 GB each) and the same again in backward: about a quarter of a 1.5B model's peak memory
without activation checkpointing. Here the decoder runs as usual, then only the positions that have a target are
kept, and the LM head and cross-entropy run over at most `chunk` of them at a time, each chunk under activation
checkpointing, so a chunk's logits exist only while that chunk is computed (and again while its backward is).
The FLOPs are the model's own plus one more LM-head matmul in backward. The cross-entropy itself reads the head's
bf16 logits directly (one fused pass each way on GPU) instead of the model's fp32 copy and stored log-softmax, which
took about 10% of a 1.5B model's step at 16k tokens on an H100.

The loss is the same quantity as the model's (sum of token losses over the step's target-token count from
`num_items_in_batch`, or over this batch's when it is absent), so the Trainer's scaling across accumulation and
devices is unchanged. The LM head is called as a module, so DeepSpeed ZeRO-3 gathers its (possibly tied) weight
through its own hooks, in forward and in the recomputation.

Every rank calls the head equally often (the chunk count is the ranks' maximum), because under ZeRO-3 each call is
a collective. Only for models whose logits are a plain linear head of the decoder's output; models that scale or
soft-cap their logits are refused.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from framework.train.fused_kernels import fused

IGNORE_INDEX = -100
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def cross_entropy_sum_forward(logits: Any, targets: Any) -> tuple[Any, Any]:
    """(sum of the rows' cross-entropies, each row's log-sum-exp), in fp32 from logits of any float dtype."""
    import torch

    lf = logits.float()
    lse = torch.logsumexp(lf, dim=-1)
    picked = torch.gather(lf, 1, targets.unsqueeze(1)).squeeze(1)
    return (lse - picked).sum(), lse


def cross_entropy_sum_backward(grad: Any, logits: Any, targets: Any, lse: Any) -> Any:
    """d(sum of cross-entropies)/d(logits) = softmax - one-hot(target), times the incoming gradient."""
    import torch

    lf = logits.float()
    probs = torch.exp(lf - lse.unsqueeze(1))
    hit = torch.arange(lf.shape[1], device=lf.device).unsqueeze(0) == targets.unsqueeze(1)
    return ((probs - hit.to(probs.dtype)) * grad).to(logits.dtype)


@functools.cache  # one class for the process: chunked_loss_sum runs every micro-step
def _cross_entropy_function() -> Any:
    """Cross-entropy summed over rows, straight from the head's (bf16) logits: no fp32 copy of the logits and no
    log-softmax tensor is ever stored; on GPU each direction is one fused pass over the logits."""
    import torch

    class CrossEntropySum(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, logits: Any, targets: Any) -> Any:
            total, lse = fused(cross_entropy_sum_forward, logits)(logits, targets)
            ctx.save_for_backward(logits, targets, lse)
            return total

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            logits, targets, lse = ctx.saved_tensors
            return fused(cross_entropy_sum_backward, logits)(grad, logits, targets, lse), None

    return CrossEntropySum


def chunked_loss_sum(head: Any, hidden: Any, labels: Any, chunk: int) -> tuple[Any, Any]:
    """(sum of next-token cross-entropies, number of target tokens) of `hidden` (batch, seq, d) against `labels`
    (batch, seq; IGNORE_INDEX where there is no target), shifted as causal LMs are."""
    import torch
    from torch.utils.checkpoint import checkpoint

    states = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1).to(states.device)
    keep = (targets != IGNORE_INDEX).nonzero(as_tuple=True)[0]
    states, targets = states.index_select(0, keep), targets.index_select(0, keep)

    cross_entropy_sum = _cross_entropy_function()

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy_sum.apply(head(h), y)

    # Every call of the head is a collective under ZeRO-3 (it gathers the head's weight), in forward and again in
    # the recomputation: all ranks must make the same number of calls, or they wait on each other for ever. So all
    # run as many chunks as the rank with the most targets; a rank's surplus chunks are empty (and add 0).
    chunks = max(1, -(-len(keep) // chunk))
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        most = torch.tensor([chunks], device=states.device)
        torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
        chunks = int(most.item())
    total = states.new_zeros((), dtype=torch.float32)
    for i in range(chunks):
        h, y = states[i * chunk : (i + 1) * chunk], targets[i * chunk : (i + 1) * chunk]
        total = total + checkpoint(piece, h, y, use_reentrant=False)
    return total, len(keep)


def install(model: Any, chunk: int) -> None:
    """Make `model`'s forward compute its loss chunk-wise when it is given labels (it still returns logits when
    it is not, e.g. for generation or the checkpoint check)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    config = model.config
    transforms = [k for k in _LOGIT_TRANSFORMS if getattr(config, k, None) not in (None, 1, 1.0)]
    if transforms:
        raise ValueError(
            f"train.loss_chunk_tokens: {type(model).__name__} transforms its logits ({', '.join(transforms)}); "
            "the chunked loss only supports a plain linear LM head: leave loss_chunk_tokens unset for this model"
        )
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    plain_forward = model.forward

    def forward(self: Any, input_ids: Any = None, labels: Any = None, **kwargs: Any) -> Any:
        if labels is None:
            return plain_forward(input_ids=input_ids, **kwargs)
        num_items = kwargs.pop("num_items_in_batch", None)
        kwargs.pop("logits_to_keep", None)
        hidden = decoder(input_ids=input_ids, **kwargs).last_hidden_state
        total, count = chunked_loss_sum(head, hidden, labels, chunk)
        denominator = num_items if num_items is not None else max(count, 1)
        if hasattr(denominator, "to"):
            denominator = denominator.to(total.device)
        return CausalLMOutputWithPast(loss=total / denominator)

    model.forward = types.MethodType(forward, model)
