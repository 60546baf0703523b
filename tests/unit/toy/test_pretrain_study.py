"""The toy robustness study's plumbing: shared training problems, train-stage encoding, grading, intervals."""

from __future__ import annotations

import numpy as np
import pytest

from framework.formatting import IGNORE_INDEX
from framework.toy import make_world, split_problems
from framework.toy.study import ARMS, N_TRAIN, encode, failure_modes, grade, paired_bootstrap, training_rows
from framework.toy.tokenizer import build_tokenizer


@pytest.fixture(scope="module")
def world():
    return make_world(0)


def test_every_arm_trains_on_the_same_problems_disjoint_from_dev_and_test(world):
    ids = {arm: [r["problem_id"] for r in training_rows(world, arm)] for arm in ARMS}
    assert all(v == ids["long_cot"] for v in ids.values())
    assert len(set(ids["long_cot"])) == N_TRAIN
    splits = split_problems(world, n_train=N_TRAIN)
    assert ids["long_cot"] == [p.problem_id for p in splits["train"]]
    held_out = {p.problem_id for name in ("dev", "test") for p in splits[name]}
    assert not held_out & set(ids["long_cot"])


def test_examples_mask_the_prompt_and_end_on_the_turn_end(world):
    tokenizer = build_tokenizer(world)
    rows = training_rows(world, "direct")
    examples = encode(tokenizer, rows)
    assert len(examples) == N_TRAIN
    for row, ex in zip(rows, examples):
        targets = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label != IGNORE_INDEX]
        assert tokenizer.decode(targets) == row["trace"] + " <|im_end|>"
        prompt = [t for t, label in zip(ex["input_ids"], ex["labels"]) if label == IGNORE_INDEX]
        assert tokenizer.convert_ids_to_tokens(prompt[-2:]) == ["<|im_start|>", "assistant"]
        assert tokenizer.unk_token_id not in ex["input_ids"]


def test_grading_reads_the_last_box(world):
    problems = split_problems(world, n_train=0, n_dev=0, n_test=3)["test"]
    p = problems[0]
    texts = [
        f"step 1 of 2 : ... the answer is \\boxed {{ {p.answer} }}",
        f"\\boxed {{ {p.answer} }} wait \\boxed {{ {(p.answer + 1) % 64} }}",
        "we apply f one step at a time",
    ]
    assert grade([p, p, p], texts) == [True, False, False]
    modes = failure_modes([p, p, p], texts, world)
    assert modes["correct"] == 1 and modes["no_box"] == 1


def test_paired_bootstrap_brackets_the_difference():
    rng = np.random.default_rng(0)
    a = (rng.random((3, 200)) < 0.8).astype(int)
    b = (rng.random((3, 200)) < 0.1).astype(int)
    d, lo, hi = paired_bootstrap(a, b, n_boot=2000)
    assert d == pytest.approx(a.mean() - b.mean())
    assert 0 < lo < d < hi < 1
    same = paired_bootstrap(a, a, n_boot=500)
    assert same[0] == 0 and same[1] <= 0 <= same[2]
    pooled = paired_bootstrap(np.stack([a, a]), np.stack([b, b]), n_boot=500)  # a pretraining-seed axis
    assert pooled[1] < pooled[0] < pooled[2]
