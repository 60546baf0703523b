"""The paper's six data factors (source, length, difficulty, diversity, keywords, correctness).

Each module defines `Params` (the level's parameters, validated at spec time) and `FACTOR`. Application order:
filters by `order` (source 10, correctness 20, difficulty 30, length 40, diversity 50; user factors default to 60),
then sampling of n_examples, then transforms (keywords 110).
"""

from framework.data.factors.base import Factor, FactorContext

__all__ = ["Factor", "FactorContext"]
