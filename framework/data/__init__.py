"""The `data` stage: a cell's factor levels applied to the pool, and its training set sampled.

`stage.py` is the entry point (`run`); `selection.py` filters, samples and fits a token budget; `factors/` holds
one module per factor.
"""

from framework.moved import old_stage_names

__getattr__ = old_stage_names("framework.data", __path__)
