"""MONAI's ``Spacingd``, safe for data dicts that carry strings under keys such as ``image_path``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.transforms import Spacingd

__all__ = ["SafeSpacingd"]


class SafeSpacingd(Spacingd):
    """``monai.transforms.Spacingd`` that leaves non-dict entries named ``<key>_*`` alone.

    MONAI 1.6.1's ``Spacingd`` updates every entry whose name starts with ``<key>_`` as if it were a
    meta dict, after resampling a NIfTI image. MONAI Label puts the string ``image_path`` in the data
    dict, so with key ``image`` the stock transform fails (``'str' object has no attribute 'update'``).
    This subclass hides such entries during the call and puts them back unchanged. Resampling,
    lazy execution and ``Invertd`` are those of ``Spacingd``; arguments are the same.
    """

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        hidden = {}
        for key in self.keys:
            for name in [k for k in d if isinstance(k, str) and k.startswith(f"{key}_")]:
                if not isinstance(d[name], dict):
                    hidden[name] = d.pop(name)
        d = super().__call__(d, lazy=lazy)
        d.update(hidden)
        return d
