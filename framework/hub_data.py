"""Reading one split of a Hugging Face hub dataset, and the commit it resolved to.

A hub id names a repository, not its content: a new upload changes what it holds. A spec pins `revision:` to make
the data part of the key; either way the commit actually read is returned, so each output records its data.
"""

from __future__ import annotations

import pandas as pd


def read_hub_split(repo: str, split: str, *, config: str | None = None, revision: str | None = None) -> pd.DataFrame:
    """The rows of `repo`'s split at `revision` (default: the latest), with `attrs["hub"]` naming the dataset,
    split, revision asked for and commit read; what `datasets.load_dataset` does, keeping hold of the builder
    because it knows the commit."""
    import datasets

    builder = datasets.load_dataset_builder(repo, config, revision=revision)
    builder.download_and_prepare()
    frame = builder.as_dataset(split=split).to_pandas()
    commit = getattr(builder, "hash", None)
    frame.attrs["hub"] = {"dataset": repo, "split": split, "revision": revision, "commit": commit}
    return frame
