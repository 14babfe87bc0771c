"""Liver masks from label maps that mark the liver with a value other than 1."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import TransformBackends

__all__ = ["LiverLabeld"]


class LiverLabeld(MapTransform):
    """Turn a label map into the binary liver mask the networks train on: 1 where ``== liver value``, else 0.

    Multi-organ label maps (TotalSegmentator marks the liver 5, some datasets 6 or 255) then work
    without rewriting the files. The liver value comes from the item itself (``value_key``, as
    :func:`custom.data.datalist_items` passes the datalist's ``liver_value``) or else ``liver_value``.
    A map already binary with ``liver_value`` 1 is left as it was, values and dtype included.
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        keys: KeysCollection,
        liver_value: float = 1,
        value_key: str | None = "liver_value",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.liver_value = liver_value
        self.value_key = value_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        value = self.liver_value
        if self.value_key is not None and d.get(self.value_key) is not None:
            value = d[self.value_key]
        value = float(value.item() if hasattr(value, "item") else value)
        for key in self.key_iterator(d):
            mask = d[key] == value
            d[key] = mask.to(d[key].dtype) if isinstance(mask, torch.Tensor) else mask.astype(d[key].dtype)
        return d
