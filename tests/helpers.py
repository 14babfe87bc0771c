"""What several test modules share: the repository's paths, the sample images, tiny network sizes and
a random checkpoint (imported as ``tests.helpers``; tests do not import from each other)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.networks.nets import BasicUNet

import custom.transforms

from tools.paths import BUNDLE, REPO

INFERENCE = str(BUNDLE / "configs" / "inference.yaml")
MR = BUNDLE / "sample_data" / "mr" / "totalseg_mr_sm_image.nii.gz"
MR_LABEL = BUNDLE / "sample_data" / "mr" / "totalseg_mr_sm_label.nii.gz"
CT = BUNDLE / "sample_data" / "ct" / "totalseg_ct_sm_image.nii.gz"
DICOM = BUNDLE / "sample_data" / "dicom" / "dcmqi_ct_3slice"

HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None  # KeepLargestConnectedComponentd on CPU
HAS_N4 = hasattr(custom.transforms, "N4BiasFieldCorrectiond")
# a tiny network_def; FAST also coarsens the grid (still resampled: 3 mm -> 4 mm) and the slice window
TINY = {"width": 4, "num_res_blocks": 1, "code_dim": 2, "segmenter#features": [4, 4, 8, 8, 16, 4], "num_workers": 0}
FAST = {**TINY, "spacing": [4.0, 4.0, 4.0], "roi_size": [96, 96], "slice_inferer#sw_batch_size": 32}


def tiny_checkpoint(path: Path, configs=(INFERENCE,), **overrides) -> Path:
    """models/model.pt as training writes it: the bare state_dict of a random network_def."""
    parser = ConfigParser()
    parser.read_config(list(configs))
    parser.update({"bundle_root": str(BUNDLE), **TINY, **overrides})
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), path)
    return path


def cause(e: BaseException, kind: type) -> BaseException:
    """The ``kind`` error of ``e``'s chain: MONAI's config parser wraps what an expression raises."""
    while e is not None and not isinstance(e, kind):
        e = e.__cause__ or e.__context__
    assert e is not None, f"no {kind.__name__} in the chain"
    return e


#: DALACE's sizes for unit tests of the networks, losses and trainers
TINY_NET = dict(base_channels=4, num_res_blocks=1, code_dim=8, mlp_channels=8, disc_channels=4, disc_layers=2)


def tiny_unet(num_classes=2):
    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=num_classes, features=(4, 4, 8, 8, 16, 4))


def liver_and_drifting_bowel(slice_mm: float):
    """(64, 64, n) boolean masks on 2 mm pixels, z superior: a liver whose discs shrink towards its tip at
    30 mm, and below it a bowel-like chain of discs drifting 6 pixels sideways per 7.5 mm, each slice's
    disc overlapping its neighbours' and the tip's: one 3D component, which the largest-component step keeps."""
    n = int(round(75 / slice_mm))
    x, y = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    liver, bowel = np.zeros((64, 64, n), bool), np.zeros((64, 64, n), bool)
    for k in range(n):
        z = k * slice_mm
        if z >= 30:
            liver[..., k] = (x - 40) ** 2 + (y - 32) ** 2 <= (6 + (z - 30) / 7.5 * 2) ** 2
        else:
            bowel[..., k] = (x - (40 - (30 - z) * 0.8)) ** 2 + (y - 32) ** 2 <= 25
    return liver, bowel
