"""The random appearance augmentation of CT training slices (custom/transforms/appearance.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from custom.transforms import (
    RandConvIntensity,
    RandConvIntensityd,
    RandLocationScaleIntensity,
    RandLocationScaleIntensityd,
    bezier_curve,
)


def ramp(shape=(1, 32, 32)) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, int(np.prod(shape))).reshape(shape)


def test_bezier_curve_runs_from_corner_to_corner_with_x_never_decreasing():
    x, y = bezier_curve((0.7, 0.1), (0.9, 0.95))
    assert (x[0], y[0], x[-1], y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(x) >= 0)


@pytest.mark.parametrize("invert, order", [(0.0, 1), (1.0, -1)])
def test_global_remapping_keeps_or_reverses_the_order_of_grey_values(invert, order):
    t = RandLocationScaleIntensity(prob=1.0, invert_prob=invert, class_prob=0.0, scale_range=(1, 1), shift_range=(0, 0))
    for seed in range(5):
        t.set_random_state(seed)
        out = t(ramp()).flatten()
        steps = np.diff(out.numpy()) * order
        assert np.all(steps >= -1e-6) and steps.sum() > 0.1  # monotone, and not flat
        assert out.min() >= -1 and out.max() <= 1


def test_location_scale_moves_and_stretches_around_mid_grey():
    # a straight Bezier curve (control points on the diagonal) leaves only scale and shift
    t = RandLocationScaleIntensity(prob=1.0, invert_prob=0.0, class_prob=0.0, scale_range=(0.5, 0.5), shift_range=(0.1, 0.1))
    t._draw_mapping = lambda: (*bezier_curve((1 / 3, 1 / 3), (2 / 3, 2 / 3)), 0.5, 0.1)
    x = torch.tensor([[-1.0, 0.0, 1.0]])
    # [0, 0.5, 1] -> (u - 0.5) * 0.5 + 0.5 + 0.1 = [0.35, 0.6, 0.85] -> back to [-1, 1]
    np.testing.assert_allclose(t(x).numpy(), [[-0.3, 0.2, 0.7]], atol=1e-3)


def test_class_level_maps_each_class_on_its_own():
    x = torch.zeros(1, 16, 16)  # one grey value everywhere, two classes
    label = torch.zeros(1, 16, 16)
    label[:, 4:12, 4:12] = 1
    t = RandLocationScaleIntensityd(keys="image", label_key="label", prob=1.0, class_prob=1.0)
    differ = 0
    for seed in range(6):
        t.set_random_state(seed)
        out = t({"image": x, "label": label})["image"]
        inside, outside = out[label > 0], out[label == 0]
        assert torch.all(inside == inside[0]) and torch.all(outside == outside[0])  # one mapping per class
        differ += int(inside[0] != outside[0])
    assert differ >= 5


def test_probability_zero_returns_the_input_and_one_changes_it():
    x = ramp()
    assert RandLocationScaleIntensityd(keys="image", prob=0.0)({"image": x})["image"] is x
    assert RandConvIntensityd(keys="image", prob=0.0)({"image": x})["image"] is x
    changed = RandConvIntensityd(keys="image", prob=1.0, mix_range=(1, 1)).set_random_state(0)({"image": x})["image"]
    assert changed.shape == x.shape and changed.dtype == torch.float32
    assert not torch.allclose(changed, x)


def test_same_seed_same_output_and_numpy_in_numpy_out():
    x = ramp()
    for cls in (RandLocationScaleIntensity, RandConvIntensity):
        a = cls(prob=1.0).set_random_state(3)(x)
        b = cls(prob=1.0).set_random_state(3)(x)
        assert torch.equal(a, b)
        out = cls(prob=1.0).set_random_state(3)(x.numpy())
        assert isinstance(out, np.ndarray) and out.dtype == np.float32


def test_random_convolution_without_mixing_is_the_identity_and_works_in_3d():
    x = ramp((1, 8, 8, 8))
    same = RandConvIntensity(prob=1.0, mix_range=(0, 0)).set_random_state(0)(x)
    torch.testing.assert_close(same, x)
    out = RandConvIntensity(prob=1.0, mix_range=(1, 1), kernel_sizes=(3,)).set_random_state(1)(x)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    # re-rendered with the input's statistics: contrast changes, overall brightness does not
    assert abs(float(out.mean() - x.mean())) < 0.25


def test_wrong_dimensionality_is_a_clear_error():
    with pytest.raises(ValueError, match="2D or 3D"):
        RandConvIntensity(prob=1.0)(torch.zeros(1, 8))


@pytest.mark.parametrize(
    "configs, modality_chain, expected",
    [
        ([], "train#preprocessing_ct", True),  # on by default for DALACE's CT stream
        ([], "train#preprocessing_mr", False),  # never on the MR stream
        (["experiments/configs/no_appearance.yaml"], "train#preprocessing_ct", False),
        (["bundle/configs/unet_ct.yaml"], "train#preprocessing", True),  # the single-source baseline
        (["bundle/configs/unet_ct.yaml", "bundle/configs/unet_mr.yaml"], "train#preprocessing", False),
    ],
)
def test_the_training_chains_carry_the_augmentation_where_the_configs_say(configs, modality_chain, expected):
    from monai.bundle import ConfigParser

    from tools.paths import BUNDLE, REPO

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / "train.yaml")] + [str(REPO / c) for c in configs])
    parser.update({"bundle_root": str(BUNDLE)})
    chain = parser.get_parsed_content(modality_chain).transforms
    kinds = {type(t) for t in chain}
    assert ({RandLocationScaleIntensityd, RandConvIntensityd} <= kinds) == expected
    assert expected or not kinds & {RandLocationScaleIntensityd, RandConvIntensityd}


def test_random_convolution_renders_every_channel_through_the_same_network():
    """Neighbouring slices as channels (slice_context) keep one appearance: each channel comes out as it
    would alone under the same draw, and identical channels stay identical."""
    x = torch.stack([ramp()[0], ramp()[0].flip(-1), ramp()[0].transpose(-1, -2)])
    out = RandConvIntensity(prob=1.0, mix_range=(1, 1)).set_random_state(5)(x)
    for c in range(3):
        alone = RandConvIntensity(prob=1.0, mix_range=(1, 1)).set_random_state(5)(x[c : c + 1])
        torch.testing.assert_close(out[c : c + 1], alone)
    same = RandConvIntensity(prob=1.0, mix_range=(1, 1)).set_random_state(2)(ramp().repeat(3, 1, 1))
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], same[2])
