"""Multiple-choice benchmarks (GPQA's layout) rendered as a lettered problem and the expected letter.

The options are shuffled with a seed of the question's id, so every reader of the same rows (the loader reading the
hub copy, `ablate fetch` writing the local file) asks the same question with the same letters.
"""

from __future__ import annotations

import hashlib
import random

import pandas as pd

from framework.benchmarks import BenchmarkError

LETTERS = "ABCDEFGH"


def multiple_choice(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """GPQA layout (Question, Correct Answer, Incorrect Answer 1-3) -> lettered problem + expected letter."""
    needed = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]
    if "expected_answer" in frame.columns and "problem" in frame.columns:
        return frame  # already rendered (e.g. a NeMo-Skills prepared file)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise BenchmarkError(f"benchmark {name}: multiple-choice columns missing: {missing}")
    rows = []
    for i, r in frame.reset_index(drop=True).iterrows():
        options = [str(r[c]).strip() for c in needed[1:]]
        qid = str(r.get("Record ID", i))
        order = list(range(4))
        random.Random(int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16)).shuffle(order)
        lines = [f"({LETTERS[k]}) {options[j]}" for k, j in enumerate(order)]
        rows.append(
            {
                "problem_id": qid,
                "problem": f"{str(r['Question']).strip()}\n\n" + "\n".join(lines),
                "expected_answer": LETTERS[order.index(0)],
                "subset": None,
            }
        )
    return pd.DataFrame(rows)
