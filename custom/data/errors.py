"""The one error a bad datalist raises: every problem found, each with its file, in one message."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DatalistError"]


class DatalistError(ValueError):
    """A datalist or one of its files is unusable. ``problems`` lists each one as ``"<file>: <what>"``.

    All problems are collected before raising, so that a user fixes a dataset in one pass rather than
    one failed training start per broken file.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        n = len(self.problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in the datalist:\n" + "\n".join(f"  - {p}" for p in self.problems))
