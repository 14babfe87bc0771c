"""The paper's loss terms (equations 1-8), gathered in :class:`DALACELoss`."""

from .dalace import DALACELoss

__all__ = ["DALACELoss"]
