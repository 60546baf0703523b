"""A sweep as a whole: its cells (`grid.py`), the plan of keyed stage jobs (`plan.py`), the stage table
(`stages.py`), running one job idempotently (`execute.py`, the body of `ablate exec`), checkpoint pruning
(`pruning.py`), the local runs going now (`live_runs.py`) and what a terminal shows of it all (`view.py`).
"""
