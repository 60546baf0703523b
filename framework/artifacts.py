"""The files stages hand each other through the store, and how they are read: a stage never imports another,
it reads what the other published. The generate stage writes `traces.parquet`; the pool stage writes `pool.parquet` and its tokenizer; the data stage writes
`train.jsonl`, in training order; the train and eval stages read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

POOL_FILE = "pool.parquet"
TRAIN_FILE = "train.jsonl"
GENERATED_FILE = "traces.parquet"  # a generate job's traces, read by the pool stage and by later refinements


def load_pool_tokenizer(stage_dir: Path) -> Any:
    """The base model's tokenizer as the pool stage saved it (transformers is imported here, when it is used)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(stage_dir / "tokenizer"))


def read_pool(stage_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(stage_dir / POOL_FILE)


def count_tokens(tokenizer: Any, texts: list[str], batch_size: int = 1024) -> list[int]:
    """Token counts with the fast tokenizer's batched encoder (no special tokens: the trace alone)."""
    out: list[int] = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(texts[i : i + batch_size], add_special_tokens=False, return_attention_mask=False)
        out.extend(len(ids) for ids in enc["input_ids"])
    return out


def read_training_set(stage_dir: Path) -> list[dict[str, Any]]:
    """A data stage's training set, one dict per example, in training order."""
    with (stage_dir / TRAIN_FILE).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]
