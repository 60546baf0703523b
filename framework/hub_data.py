"""Reading one split of a Hugging Face hub dataset, and the commit it resolved to.

A hub id names a repository, not its content: a new upload changes what it holds. A spec pins `revision:` to make
the data part of the key; either way the commit actually read is returned, so each output records its data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd


def read_hub_split(
    repo: str,
    split: str,
    *,
    config: str | None = None,
    revision: str | None = None,
    where: Mapping[str, Sequence[Any]] | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """The rows of `repo`'s split at `revision` (default: the latest), with `attrs["hub"]` naming the dataset,
    split, revision asked for and commit read.

    Only the split's own files are downloaded: `load_dataset` fetches every split of a config, which for
    OpenMathReasoning is ~50 GB of other splits. `where` (column -> allowed values) and `limit` (first rows)
    are applied to the memory-mapped Arrow table, so a filtered slice of millions of traces never becomes one
    pandas frame whole.
    """
    import datasets

    builder = datasets.load_dataset_builder(repo, config, revision=revision)
    commit = getattr(builder, "hash", None)
    files = builder.config.data_files.get(split) if builder.config.data_files else None
    if files:
        builder = datasets.load_dataset_builder(repo, config, revision=revision, data_files={split: list(files)})
    builder.download_and_prepare()
    ds = builder.as_dataset(split=split)
    for column, allowed in (where or {}).items():
        if column in ds.column_names:  # a missing column is reported by the caller, with the columns there are
            keep = set(allowed)
            ds = ds.filter(lambda values, keep=keep: [v in keep for v in values], batched=True, input_columns=column)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    frame = ds.to_pandas()
    frame.attrs["hub"] = {"dataset": repo, "split": split, "revision": revision, "commit": commit}
    return frame
