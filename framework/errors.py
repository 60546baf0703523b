"""User errors: problems the user can fix (bad spec, bad pool, missing file). The CLI prints each on its own
line and exits 2, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """One or more problems, each a self-contained sentence naming where it is (file, line, field, cell)."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DataError(UserError):
    """A cell whose factors leave too few traces (or similar); names the cell, the factor and the counts. Here,
    not in the data stage, because `ablate plan` gathers every cell's from the stages it builds in-process."""


class PoolValueError(UserError):
    """Pool values a factor's rule cannot use (text difficulty labels for a numeric band, no value at all): the
    pool loads, since only this rule needs them, and the message names the row and how to fix it."""


class RetryLater(Exception):
    """A stage that could not run now for a reason outside the sweep (e.g. the tracking server is down).

    `ablate exec` exits with EX_TEMPFAIL (75); launchers record the job as deferred, not failed, and the next
    `ablate run` tries it again. Nothing is lost: the stage's inputs stay in the store.
    """

    exit_code = 75
