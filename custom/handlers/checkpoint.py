"""Checkpoints that are written atomically, so that a crash or a kill never leaves a broken file."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from custom.networks.ensemble import checkpoint_members
from custom.utils import atomic_save

__all__ = [
    "AtomicCheckpointSaver",
    "ResumeCheckpointLoader",
    "check_checkpoint",
    "latest_checkpoint",
    "require_member",
    "require_members",
]


def check_checkpoint(path: str | os.PathLike, what: str = "model checkpoint", network: torch.nn.Module | None = None) -> str:
    """``path`` if it loads with ``weights_only=True`` (and, given ``network``, holds exactly its
    weights); else an error whose first line names the file and the problem (torch says
    "PytorchStreamReader failed reading zip archive" or a bare ``EOFError``, or lists every key)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size == 0:
            problem = "is empty (0 bytes): a save that never completed"
        elif "weights only load failed" in str(e).lower():
            problem = "holds more than tensors and is refused by weights_only=True loading"
        else:
            problem = f"is truncated or not a PyTorch checkpoint ({size} bytes)"
        cause = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(f"{what} {os.path.abspath(path)!r} {problem}: {type(e).__name__}: {cause[:200]}") from e
    if network is not None and isinstance(state, dict):
        expected = network.state_dict()
        _check_keys(path, what, set(state), set(expected))
        _check_shapes(path, what, state, expected)
    return str(path)


def require_member(ensemble: str | os.PathLike, member: str | os.PathLike) -> str:
    """``ensemble`` if it holds ``member``'s weights as one of its members, or if ``member`` is not a file;
    else a ``ValueError`` naming both. The shipped ensemble holds ``models/model.pt`` (its ``seed_0``): a
    training that has since written another ``model.pt`` there would be ignored by an inference that
    segments with the ensemble, so it stops and says how to use the new model instead."""
    if not os.path.isfile(member):
        return str(ensemble)
    state = torch.load(ensemble, map_location="cpu", weights_only=True)
    own = torch.load(member, map_location="cpu", weights_only=True)
    for name in checkpoint_members(state):
        prefix = f"members.{name}."
        weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if weights.keys() == own.keys() and all(torch.equal(weights[k], v) for k, v in own.items()):
            return str(ensemble)
    raise ValueError(
        f"{os.path.abspath(member)!r} is not a member of the ensemble {os.path.abspath(ensemble)!r} that inference "
        f"would segment with: a training wrote it after the ensemble was made. Segment with the new model alone "
        f"(--ckpt_path {member}), or make an ensemble of your trainings (python -m custom.networks seed_ensemble "
        f"<model.pt of each> --output {ensemble})."
    )


def require_members(path: str | os.PathLike, names: list[str] | None) -> str:
    """``path`` if ``names`` is None or the ensemble in it holds exactly those members in that order; else a
    ``ValueError`` naming the file, its members and the names given (seed_ensemble.yaml builds its network
    from the file, so names it does not hold must not pass unread)."""
    if names is None:
        return str(path)
    found = checkpoint_members(torch.load(path, map_location="cpu", weights_only=True))
    if found != list(names):
        raise ValueError(
            f"ensemble {os.path.abspath(path)!r} holds the members {found}, not {list(names)} (ensemble_members): "
            "leave ensemble_members unset to segment with the file's members, or name another file (ensemble_file)."
        )
    return str(path)


def _check_shapes(path: str | os.PathLike, what: str, found: dict, expected: dict) -> None:
    """A checkpoint of the same layers at other sizes (widths, code_dim, input channels): say which, and
    the input's channels where they differ (``slice_context``), before any case is read."""
    differ = [k for k, v in expected.items() if hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(v.shape)]
    if not differ:
        return
    hint = " The sizes (width, num_res_blocks, code_dim, segmenter#features) must be those the model was trained with."
    first = next((k for k, v in expected.items() if v.ndim == 4), None)  # the first convolution reads the image
    if first in differ and found[first].shape[1] != expected[first].shape[1]:
        hint = (
            f" The model takes {found[first].shape[1]} image channels and this network_def {expected[first].shape[1]}: "
            "slice_context must be the training's (2 * slice_context + 1 channels: a slice and its neighbours)."
        )
    shown = ", ".join(f"{k} {tuple(found[k].shape)} instead of {tuple(expected[k].shape)}" for k in differ[:3])
    raise ValueError(
        f"{what} {os.path.abspath(path)!r} holds this network_def's layers at other sizes: {shown}"
        f"{' and more' if len(differ) > 3 else ''}.{hint}"
    )


def _check_keys(path: str | os.PathLike, what: str, found: set[str], expected: set[str]) -> None:
    """A checkpoint for another network: say which parts differ, and the fix when it is the paths."""
    if found == expected:
        return
    depth = lambda k: 3 if k.startswith("extra_paths.") else 2 if k.startswith("members.") else 1  # noqa: E731
    parts = lambda keys: sorted({".".join(k.split(".")[: depth(k)]) for k in keys})  # noqa: E731
    missing, unexpected = parts(expected - found), parts(found - expected)
    hint = ""
    if any(p.startswith("extra_paths.") for p in missing + unexpected):
        hint = (
            " The inference network's extra_paths do not match the checkpoint's: a model trained with the paper's "
            "single path loads with --extra_paths \"[]\" (or merge its model.pt and model_ct.pt with "
            "custom.networks.merge_paths); one trained with both paths needs --extra_paths \"['ct']\"."
        )
    elif any(p.startswith("members.") for p in missing + unexpected):
        names = sorted(checkpoint_members(found))
        hint = f" The ensemble's members are not the file's: the file holds {names} (--ensemble_members names them)."
    raise ValueError(
        f"{what} {os.path.abspath(path)!r} is not a state_dict of this network_def: missing {missing or 'nothing'}, "
        f"unexpected {unexpected or 'nothing'}.{hint}"
    )


def latest_checkpoint(ckpt_dir: str | os.PathLike, required: bool = False) -> str | None:
    """The checkpoint of the highest epoch in ``ckpt_dir`` (what ``resume`` loads), or None.

    With ``required``, a missing one is a ``FileNotFoundError`` that names the folder.
    """
    found = glob.glob(os.path.join(str(ckpt_dir), "checkpoint_epoch=*.pt"))

    def epoch(f: str) -> int:
        try:
            return int(Path(f).stem.split("=")[-1])
        except ValueError:
            return -1

    found = [f for f in found if epoch(f) >= 0]
    if not found and required:
        raise FileNotFoundError(
            f"resume=true but there is no checkpoint (checkpoint_epoch=N.pt) in '{os.path.abspath(ckpt_dir)}'; "
            "start without resume, or point ckpt_dir at the run to continue."
        )
    return max(found, key=epoch) if found else None


class AtomicCheckpointSaver:
    """Saves the state_dicts of ``save_dict`` atomically, MONAI ``CheckpointLoader``-compatible.

    MONAI's ``CheckpointSaver`` writes in place (ignite's ``DiskSaver(atomic=False)``): a kill during a
    save leaves a truncated file. This handler writes to a temporary file and renames it.

    Two uses, as in the model zoo's ``CheckpointSaver``:

    - training state, attached to the trainer: every ``interval`` epochs and at the end (also when
      training stops early), ``checkpoint_epoch=N.pt`` holding ``{name: state_dict}`` of every
      object (networks, optimizers, the trainer itself, so that epoch and iteration resume); older
      ones beyond ``n_saved`` are removed.
    - one network's weights, ``filename="model.pt"`` with a single-entry ``save_dict``: the bare
      state_dict, as MONAI tools and MONAI Label load it. Attached to an evaluator with
      ``key_metric=True`` it saves only when the key metric improved; else every ``interval`` epochs.

    Args:
        save_dir: folder of the files.
        save_dict: name -> object with ``state_dict()``.
        filename: fixed file name (single-entry ``save_dict`` gives the bare state_dict); None writes
            ``checkpoint_epoch=N.pt``.
        interval: save every so many epochs (of the engine it is attached to).
        n_saved: epoch checkpoints to keep (None keeps all).
        key_metric: save when the attached evaluator's key metric reached a new best.
        engine_key: also save the engine it is attached to (epoch, iteration) under this name; set by
            ``attach``, so that a config need not reference the trainer from the trainer's own handlers.
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict[str, Any],
        filename: str | None = None,
        interval: int = 1,
        n_saved: int | None = 2,
        key_metric: bool = False,
        engine_key: str | None = None,
        name: str | None = None,
    ) -> None:
        if not save_dict:
            raise ValueError("AtomicCheckpointSaver needs at least one object to save.")
        self.save_dir = Path(save_dir)
        self.save_dict = save_dict
        self.filename = filename
        self.interval = max(int(interval), 1)
        self.n_saved = n_saved
        self.key_metric = key_metric
        self.engine_key = engine_key
        self.logger = logging.getLogger(name or __name__)
        self._last_epoch: int | None = None

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.save_dict = {**self.save_dict, self.engine_key: engine}
        if self.key_metric:
            engine.add_event_handler(Events.COMPLETED, self._on_best)
            return
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def state(self) -> Any:
        if self.filename is not None and len(self.save_dict) == 1:
            return next(iter(self.save_dict.values())).state_dict()
        return {k: v.state_dict() for k, v in self.save_dict.items()}

    def save(self, engine: Engine) -> Path:
        path = self.save_dir / (self.filename or f"checkpoint_epoch={engine.state.epoch}.pt")
        if self.filename is None and engine.state.epoch == self._last_epoch:
            return path  # COMPLETED right after this epoch's save
        atomic_save(self.state(), path)
        self._last_epoch = engine.state.epoch
        self.logger.info(f"saved checkpoint {path}")
        # temporary files of runs killed while saving (a folder is written by one run at a time)
        for stale in self.save_dir.glob(f".{glob.escape(path.name) if self.filename else 'checkpoint_epoch=*.pt'}.*.tmp"):
            stale.unlink(missing_ok=True)
        if self.filename is None and self.n_saved:
            kept = sorted(
                glob.glob(str(self.save_dir / "checkpoint_epoch=*.pt")), key=lambda f: int(Path(f).stem.split("=")[-1])
            )
            for old in kept[: -self.n_saved]:
                os.unlink(old)
        return path

    def _on_best(self, engine: Engine) -> None:
        if engine.state.best_metric_epoch == engine.state.epoch:
            self.save(engine)


class ResumeCheckpointLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` (``weights_only=True``) for resuming: it loads the latest
    ``checkpoint_epoch=N.pt`` of ``ckpt_dir`` into ``load_dict`` and into the engine it is attached to
    (under ``engine_key``), so that epoch, iteration and every optimizer continue where they stopped.

    A missing checkpoint is a clear error naming the folder, raised when training starts.
    """

    def __init__(self, ckpt_dir: str, load_dict: dict, engine_key: str = "trainer", **kwargs: Any) -> None:
        super().__init__(load_path=str(ckpt_dir), load_dict=dict(load_dict), **kwargs)
        self.ckpt_dir = ckpt_dir
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        self.load_dict[self.engine_key] = engine
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        self.load_path = latest_checkpoint(self.ckpt_dir, required=True)
        super().__call__(engine)
        self.logger.info(f"resumed from {self.load_path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")
