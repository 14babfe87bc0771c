"""Unpaired CT and MR streams for adversarial training (the paper's CT and MR are never paired)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from monai.data import CacheDataset
from monai.data.utils import set_rnd
from monai.transforms import Randomizable
from torch.utils.data import Dataset

__all__ = ["UnpairedDataset"]


class UnpairedDataset(Randomizable, Dataset):
    """CT and MR items, each through its own transform and cache, zipped without pairing.

    Item ``i`` is CT sample ``i`` (cycling over the CT list) with an MR sample drawn at random,
    flattened to ``ct_image``, ``ct_label``, ``mr_image`` (and ``mr_label`` where the MR transform
    keeps labels, as in joint learning). Each modality's deterministic preprocessing (loading, N4,
    resampling, normalization) runs once per volume in a MONAI ``CacheDataset``; the random slice
    sampling and augmentation after it run per item.

    Args:
        data: ``{"ct": [...], "mr": [...]}``, lists of datalist items (``image``, ``label``); the
            bundle property ``train#dataset#data``. A plain list instead is labelled MR (what MONAI
            Label's training sets ``train#dataset#data`` to: ``[{"image", "label"}, ...]``): it becomes
            the MR stream and ``ct_data`` the CT stream (joint learning, as ``configs/joint.yaml``).
        ct_data: labelled CT items for a plain-list ``data`` (ignored when ``data`` is a dict).
        ct_transform, mr_transform: each modality's transform chain, ending in one 2D slice sample
            (a dict, or a one-element list as MONAI's ``num_samples`` croppers return).
        length: items per epoch (default: the larger of the two lists).
        cache_rate, num_workers: of the caches (``cache_rate=0`` disables caching).
        keys: keys copied from each sample.
    """

    def __init__(
        self,
        data: dict[str, Sequence[dict]],
        ct_transform: Callable,
        mr_transform: Callable,
        length: int | None = None,
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        keys: Sequence[str] = ("image", "label"),
        ct_data: Sequence[dict] | None = None,
    ) -> None:
        if isinstance(data, (list, tuple)):  # labelled MR items (MONAI Label), CT from ct_data
            if any(not isinstance(i, dict) or not i.get("label") for i in data):
                raise ValueError("UnpairedDataset: a plain list 'data' must be labelled MR items {'image', 'label'}.")
            data = {"ct": list(ct_data or []), "mr": list(data)}
        missing = [m for m in ("ct", "mr") if not data.get(m)]
        if missing:
            raise ValueError(f"UnpairedDataset needs 'ct' and 'mr' items; empty or missing: {missing}.")
        self.data = data
        self.ct = CacheDataset(data["ct"], ct_transform, cache_rate=cache_rate, num_workers=num_workers)
        self.mr = CacheDataset(data["mr"], mr_transform, cache_rate=cache_rate, num_workers=num_workers)
        self.keys = tuple(keys)
        self.length = int(length) if length else max(len(self.ct), len(self.mr))
        self._mr_index = 0

    def __len__(self) -> int:
        return self.length

    def set_random_state(self, seed: int | None = None, state=None) -> UnpairedDataset:
        """Seeds the MR pairing and, with ``seed``, each modality's random transforms (``set_rnd``
        stops at an object that has this method, so the streams are reached from here)."""
        super().set_random_state(seed, state)
        if seed is not None:
            set_rnd(self.ct, seed + 1)
            set_rnd(self.mr, seed + 2)
        return self

    def randomize(self, data=None) -> None:
        self._mr_index = int(self.R.randint(len(self.mr)))

    def __getitem__(self, index: int) -> dict:
        self.randomize()
        out = {}
        for prefix, sample in (("ct", self.ct[index % len(self.ct)]), ("mr", self.mr[self._mr_index])):
            if isinstance(sample, (list, tuple)):
                sample = sample[0]
            out.update({f"{prefix}_{k}": sample[k] for k in self.keys if k in sample})
        return out
