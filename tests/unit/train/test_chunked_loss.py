"""The chunked loss against the model's own: same loss, same gradients, on a small random Qwen2 (CPU, no
DeepSpeed; the ZeRO-3 run is in tests/integration/test_train.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from framework.train import chunked_loss


def tiny(tied: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
    )
    return Qwen2ForCausalLM(config).float()


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (3, 17), generator=g)
    labels = ids.clone()
    labels[:, :5] = -100  # the prompt
    labels[2, 11:] = -100  # a shorter row, right-padded
    mask = torch.ones_like(ids)
    mask[2, 11:] = 0
    return ids, mask, labels


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("num_items", [None, 50])
def test_same_loss_and_gradients_as_the_models_own(tied, chunk, num_items):
    ids, mask, labels = batch()
    plain = tiny(tied)
    chunked = copy.deepcopy(plain)
    chunked_loss.install(chunked, chunk)
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    a = plain(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
    b = chunked(input_ids=ids, attention_mask=mask, labels=labels, **extra).loss
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    a.backward()
    b.backward()
    for (name, p), q in zip(plain.named_parameters(), chunked.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_without_labels_the_model_still_returns_logits():
    ids, mask, _ = batch()
    plain = tiny(False)
    chunked = copy.deepcopy(plain)
    chunked_loss.install(chunked, 4)
    want = plain(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(chunked(input_ids=ids, attention_mask=mask).logits, want)


def test_a_batch_without_targets_gives_zero_loss_and_a_connected_graph():
    ids, mask, labels = batch()
    model = tiny(False)
    chunked_loss.install(model, 4)
    loss = model(input_ids=ids, attention_mask=mask, labels=torch.full_like(labels, -100)).loss
    assert loss.item() == 0.0
    loss.backward()  # every rank must be able to run backward, even on a micro-batch with nothing to learn
    assert model.lm_head.weight.grad is not None


def test_models_that_transform_their_logits_are_refused():
    model = tiny(False)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ValueError, match="transforms its logits \\(final_logit_softcapping\\)"):
        chunked_loss.install(model, 4)
