"""Synthetic abdominal-looking volumes for the scaling measurements (and the fast test).

An ellipsoidal body with a brighter 'liver' blob, a smooth multiplicative bias field (so N4 has
something to fit) and noise, written as NIfTI with an RAS affine at the given spacing.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np


def make_volume(path: str | Path, shape: tuple[int, int, int], spacing=(1.5, 1.5, 1.5), modality: str = "mr", seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in shape], indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    liver = ((x + 0.3) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 + (z / 0.9) ** 2 < 1
    if modality == "ct":
        img = np.where(body, 40.0, -1000.0) + np.where(liver, 60.0, 0.0) + rng.normal(0, 15, shape)
        data = img.astype(np.int16)
    else:
        bias = np.exp(0.3 * x - 0.2 * y + 0.1 * z).astype(np.float32)
        img = (np.where(body, 300.0, 5.0) + np.where(liver, 200.0, 0.0)) * bias + rng.normal(0, 10, shape)
        data = np.clip(img, 0, None).astype(np.float32)
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)
