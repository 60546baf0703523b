"""The `pool` stage: every pool source read into one table and annotated once per sweep.

`stage.py` is the entry point (`run`); `sources.py` reads files, dataset directories and hub datasets; `presets.py`
names the released layouts; `topics.py` clusters problems for pools without topic labels.
"""

from framework.moved import old_stage_names

__getattr__ = old_stage_names("framework.pool", __path__)
