"""The worker's pure helpers: filling the last micro-batches so no example is trained twice per epoch, and failing
a run whose loss stopped being a number."""

from __future__ import annotations

import pytest

from framework.train.worker import IGNORE_INDEX, pad_for_ranks


def _example(i: int, n: int) -> dict:
    return {"sample_index": i, "input_ids": list(range(n)), "attention_mask": [1] * n, "labels": list(range(n))}


def test_fillers_complete_the_last_micro_batches_and_train_nothing():
    examples = [_example(0, 9), _example(1, 4), _example(2, 7)]
    padded = pad_for_ranks(examples, 4)
    assert padded[:3] == examples and len(padded) == 4
    filler = padded[3]
    assert filler["sample_index"] == -1 and filler["input_ids"] == [0, 1, 2, 3]  # the shortest example's tokens
    assert filler["labels"] == [IGNORE_INDEX] * 4  # adds nothing to the loss or its token count
    assert examples[1]["labels"] == [0, 1, 2, 3]  # the example it copies is untouched
    assert len(pad_for_ranks(examples, 8)) == 8


def test_examples_that_divide_evenly_are_left_as_they_are():
    examples = [_example(i, 3) for i in range(4)]
    assert pad_for_ranks(examples, 2) is examples and pad_for_ranks(examples, 1) is examples


def test_a_loss_or_gradient_norm_that_is_not_a_number_fails_the_run():
    from framework.train.worker import check_finite

    check_finite({"loss": 1.25, "grad_norm": 3.0, "learning_rate": 1e-5}, 4)
    for bad in ({"loss": float("nan")}, {"grad_norm": float("inf"), "loss": 2.0}):
        with pytest.raises(FloatingPointError, match=r"training diverged at step 7: (loss|grad_norm) = (nan|inf)"):
            check_finite(bad, 7)
