"""Training and inference must preprocess alike: the same ids, the same values, the same voxels."""

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from tests.helpers import BUNDLE  # noqa: E402
SHARED_IDS = ["spacing", "roi_size", "ct_window", "mr_percentiles", "mr_tail_cap", "bias_correction", "width", "num_res_blocks", "code_dim", "segmenter", "models_dir", "extra_paths", "slice_context", "image_channels", "neighbour_slices"]


def parser(*files, **overrides):
    p = ConfigParser()
    p.read_config([str(BUNDLE / "configs" / f) for f in files])
    p.update({"bundle_root": str(BUNDLE), **overrides})
    return p


@pytest.mark.parametrize("extra", [[], ["sample.yaml"], ["paper.yaml"]])
def test_shared_ids_have_equal_values(extra):
    train, infer = parser("train.yaml", *extra), parser("inference.yaml", *extra)
    for key in SHARED_IDS:
        assert train.get_parsed_content(key, instantiate=False) is not None
        assert str(train.get_parsed_content(key, instantiate=False)) == str(infer.get_parsed_content(key, instantiate=False)), key
    strip = lambda d: {k: v for k, v in d.items() if k != "_disabled_"}  # noqa: E731
    assert strip(train["n4"]) == strip(infer["n4"])


@pytest.mark.parametrize("modality, slice_context", [("ct", 0), ("mr", 0), ("mr", 1)])
def test_training_and_inference_preprocess_to_the_same_voxels(modality, slice_context):
    files = {"ct": "ct/totalseg_ct_sm_image.nii.gz", "mr": "mr/totalseg_mr_sm_image.nii.gz"}
    item = {"image": str(BUNDLE / "sample_data" / files[modality])}
    # N4's own settings are compared above; the sample's 3 mm slices resampled to the 4 mm grid either way
    fast = {"bias_correction": False, "spacing": [4.0, 4.0, 4.0], "slice_context": slice_context}
    train = Compose(parser("train.yaml", **fast).get_parsed_content(f"preprocessing_{modality}"))(dict(item))
    infer = parser("inference.yaml", modality=modality, **fast).get_parsed_content("preprocessing")(dict(item))
    assert train["image"].shape == infer["image"].shape and train["image"].shape[0] == 2 * slice_context + 1
    np.testing.assert_allclose(torch.as_tensor(train["image"]).numpy(), torch.as_tensor(infer["image"]).numpy(), atol=1e-6)
    np.testing.assert_allclose(train["image"].affine, infer["image"].affine)
    assert float(infer["image"].min()) >= -1.0 and float(infer["image"].max()) <= 1.0


def test_self_training_masks_radius_reaches_the_teacher_inference():
    """The teacher's masks end with the largest component alone unless pseudo_label_bridge_radius_mm says
    otherwise (students of cut masks measured no better); the radius reaches the teacher's inference."""
    student = parser("train.yaml", "self_training.yaml")
    assert student.get_parsed_content("pseudo_label_bridge_radius_mm") == 0.0
    assert student.get_parsed_content("pseudo_label_inference")["bridge_radius_mm"] == 0.0
    # nor inference.yaml's slice continuity step, named so that its default cannot reach the masks
    assert parser("inference.yaml", modality="mr").get_parsed_content("slice_continuity") > 0
    assert parser("inference.yaml", modality="ct").get_parsed_content("slice_continuity") == 0  # MR's step
    assert student.get_parsed_content("pseudo_label_inference")["slice_continuity"] == 0.0
    radius = parser("inference.yaml").get_parsed_content("bridge_radius_mm")
    cut = parser("train.yaml", "self_training.yaml", pseudo_label_bridge_radius_mm=radius)
    assert radius > 0 and cut.get_parsed_content("pseudo_label_inference")["bridge_radius_mm"] == radius


def test_self_training_masks_test_time_augmentation_reaches_the_teacher_inference():
    student = parser("train.yaml", "self_training.yaml")
    assert student.get_parsed_content("pseudo_label_inference")["test_time_augmentation"] is False
    augmented = parser("train.yaml", "self_training.yaml", pseudo_label_test_time_augmentation=True)
    assert augmented.get_parsed_content("pseudo_label_inference")["test_time_augmentation"] is True


def test_self_training_masks_slice_context_reaches_the_teacher_inference():
    """A teacher trained on neighbouring slices writes its masks from the same input; without them the
    overrides (and the masks' record) are those of before slice_context."""
    assert "slice_context" not in parser("train.yaml", "self_training.yaml").get_parsed_content("pseudo_label_inference")
    student = parser("train.yaml", "self_training.yaml", slice_context=1)
    overrides = student.get_parsed_content("pseudo_label_inference")
    assert overrides["slice_context"] == 1
    teacher = parser("inference.yaml", **{k: v for k, v in overrides.items() if k != "ckpt_path"})
    assert teacher.get_parsed_content("image_channels") == 3


@pytest.mark.parametrize("config", ["train.yaml", "inference.yaml"])
def test_mr_tail_cap_reaches_the_mr_normalization(config):
    """The id the experiments and the CLI override is the one the MR normalization reads."""
    from custom.transforms import ScaleIntensityRangePercentilesCappedd

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / config))
    parser.update({"bundle_root": str(BUNDLE), "mr_tail_cap": 1.5})
    normalize = parser.get_parsed_content("normalize_mr")
    assert isinstance(normalize, ScaleIntensityRangePercentilesCappedd) and normalize.scale.max_ratio == 1.5

