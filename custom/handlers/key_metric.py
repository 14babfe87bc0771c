"""The validation's best key metric as checkpoint state, so that a resumed run does not forget its best model."""

from __future__ import annotations

from collections.abc import Mapping

from ignite.engine import Engine

__all__ = ["KeyMetricState"]


class KeyMetricState:
    """``state_dict``/``load_state_dict`` of an evaluator's best key metric and its epoch.

    The evaluator saves ``model.pt`` whenever its key metric beats the best so far. Put this object in
    the training checkpoint's objects: a resumed run then compares with the best of the whole run, not
    with nothing, and never replaces the best model with a worse one.
    """

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict:
        s = self.evaluator.state
        return {"best_metric": float(getattr(s, "best_metric", -1)), "best_metric_epoch": int(getattr(s, "best_metric_epoch", -1))}

    def load_state_dict(self, state: Mapping) -> None:
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])
