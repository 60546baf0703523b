"""A causal-LM loss that never holds the whole sequence's logits: `train.loss_chunk_tokens`.

At 16k tokens and a 152k-token vocabulary, the model's own loss materializes the logits (5 GB in bf16), their fp32
copy and log-softmax (10 GB each) and the same again in backward: about a quarter of a 1.5B model's peak memory
without activation checkpointing. Here the decoder runs as usual, then only the positions that have a target are
kept, and the LM head and cross-entropy run over at most `chunk` of them at a time, each chunk under activation
checkpointing, so a chunk's logits exist only while that chunk is computed (and again while its backward is).
The FLOPs are the model's own plus one more LM-head matmul in backward.

The loss is the same quantity as the model's (sum of token losses over the step's target-token count from
`num_items_in_batch`, or over this batch's when it is absent), so the Trainer's scaling across accumulation and
devices is unchanged. The LM head is called as a module, so DeepSpeed ZeRO-3 gathers its (possibly tied) weight
through its own hooks, in forward and in the recomputation.

Every rank calls the head equally often (the chunk count is the ranks' maximum), because under ZeRO-3 each call is
a collective. Only for models whose logits are a plain linear head of the decoder's output; models that scale or
soft-cap their logits are refused.
"""

from __future__ import annotations

import types
from typing import Any

IGNORE_INDEX = -100
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def chunked_loss_sum(head: Any, hidden: Any, labels: Any, chunk: int) -> tuple[Any, Any]:
    """(sum of next-token cross-entropies, number of target tokens) of `hidden` (batch, seq, d) against `labels`
    (batch, seq; IGNORE_INDEX where there is no target), shifted as causal LMs are."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    states = hidden[:, :-1, :].reshape(-1, hidden.shape[-1])
    targets = labels[:, 1:].reshape(-1).to(states.device)
    keep = (targets != IGNORE_INDEX).nonzero(as_tuple=True)[0]
    states, targets = states.index_select(0, keep), targets.index_select(0, keep)

    def piece(h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(head(h).float(), y, reduction="sum")

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
