"""custom.inferers: test-time augmentation averages the class probabilities of real inferer passes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import SliceInferer

from custom import inferers  # not its class by name: pytest would take a Test* name for a test class
from custom.inferers import gamma_on_range

from tests.helpers import tiny_unet


def slice_inferer():
    return SliceInferer(roi_size=(32, 32), spatial_dim=2, sw_batch_size=4, overlap=0.25, mode="gaussian", cval=-1.0)


def volume(seed=0, shape=(40, 36, 6)):
    torch.manual_seed(seed)
    smooth = F.avg_pool3d(torch.rand(1, 1, *shape), 5, stride=1, padding=2)
    return (smooth - smooth.min()) / (smooth.max() - smooth.min()) * 2 - 1


def probabilities(inferer, network, x):
    with torch.no_grad():
        return torch.softmax(inferer(x, network).float(), 1)


def test_gamma_keeps_the_range_ends_and_orders_values():
    x = torch.linspace(-1, 1, 101)
    for g in (0.5, 0.8, 1.25, 2.0):
        y = gamma_on_range(x, g)
        assert y[0] == -1 and y[-1] == 1 and (y.diff() > 0).all()
        assert (y[1:-1] > x[1:-1]).all() if g < 1 else (y[1:-1] < x[1:-1]).all()
    torch.testing.assert_close(gamma_on_range(x, 1.0), x)
    torch.testing.assert_close(gamma_on_range(torch.tensor([0.0, 50.0, 100.0]), 2.0, (0, 100)), torch.tensor([0.0, 25.0, 100.0]))


def test_probabilities_are_the_mean_of_the_plain_and_gamma_passes():
    net = tiny_unet().eval()
    x, base = volume(), slice_inferer()
    tta = inferers.TestTimeAugmentationInferer(base, gammas=(0.7, 1.4), zooms=())
    expected = torch.stack([probabilities(base, net, v) for v in (x, gamma_on_range(x, 0.7), gamma_on_range(x, 1.4))]).mean(0)
    got = probabilities(tta, net, x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(got, probabilities(base, net, x), atol=1e-3)  # the gammas changed something


def test_zoom_resamples_in_plane_only_and_back_to_the_grid():
    """A pointwise network on slices that are each one constant: a zoomed pass must give each slice
    its plain probabilities again (zooming along the slice axis would mix the slices)."""
    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 2, 1).eval()
    x = (torch.arange(6.0) / 2.5 - 1).reshape(1, 1, 1, 1, 6).expand(1, 1, 40, 36, 6).contiguous()
    base = slice_inferer()
    zoomed = probabilities(inferers.TestTimeAugmentationInferer(base, gammas=(), zooms=(0.8, 1.3)), net, x)
    assert zoomed.shape == (1, 2, 40, 36, 6)
    torch.testing.assert_close(zoomed, probabilities(base, net, x), atol=1e-5, rtol=1e-4)
    # zoomed along every axis, the slices mix
    mixed = probabilities(inferers.TestTimeAugmentationInferer(base, gammas=(), zooms=(0.8, 1.3), slice_dim=None), net, x)
    assert mixed.shape == zoomed.shape and not torch.allclose(mixed, zoomed, atol=1e-3)


def test_a_zoom_pass_is_the_zoomed_image_segmented_and_resampled_back():
    net = tiny_unet().eval()
    x, base = volume(1), slice_inferer()
    small = F.interpolate(x, scale_factor=(0.75, 0.75, 1.0), mode="trilinear", align_corners=False)
    back = F.interpolate(probabilities(base, net, small), size=x.shape[2:], mode="trilinear", align_corners=False)
    expected = (probabilities(base, net, x) + back) / 2
    torch.testing.assert_close(probabilities(inferers.TestTimeAugmentationInferer(base, gammas=(), zooms=(0.75,)), net, x), expected,
                               atol=1e-5, rtol=1e-4)


def test_meta_tensor_in_meta_tensor_out():
    affine = torch.diag(torch.tensor([3.0, 3.0, 3.0, 1.0]))
    x = MetaTensor(volume(), affine=affine)
    out = inferers.TestTimeAugmentationInferer(slice_inferer())(x, tiny_unet().eval())
    assert isinstance(out, MetaTensor) and out.shape == (1, 2, 40, 36, 6)
    torch.testing.assert_close(out.affine, affine.double() if out.affine.dtype == torch.float64 else affine)


@pytest.mark.parametrize("kwargs, message", [
    (dict(gammas=(0.0,)), "positive"), (dict(zooms=(-1.0,)), "positive"), (dict(value_range=(1.0, -1.0)), "low < high"),
    (dict(gammas="0.8"), "gammas must be a list of numbers"), (dict(zooms=1.1), "zooms must be a list of numbers"),
    (dict(gammas=["a"]), "gammas must be a list of numbers"),
])
def test_refuses_meaningless_settings(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        inferers.TestTimeAugmentationInferer(slice_inferer(), **kwargs)


class _Recorder(torch.nn.Module):
    """A tiny U-Net that records the dtype its convolutions ran in and whether autocast was on."""

    def __init__(self):
        super().__init__()
        self.net = tiny_unet().eval()
        self.seen = []

    def forward(self, x):
        out = self.net(x)
        self.seen.append((out.dtype, torch.is_autocast_enabled("cpu")))
        return out


def test_ensembles_get_the_plain_pass_unless_asked():
    """ensembles=False: a ProbabilityEnsemble (several trainings, averaged already) gets one pass, the
    slice inferer's own; a single network is still augmented by the same inferer; ensembles=True
    augments both."""
    from custom.networks import ProbabilityEnsemble

    torch.manual_seed(0)
    x = volume()
    single, ensemble = tiny_unet().eval(), ProbabilityEnsemble({"a": tiny_unet(), "b": tiny_unet()}).eval()
    skipping = inferers.TestTimeAugmentationInferer(slice_inferer(), ensembles=False)
    augmenting = inferers.TestTimeAugmentationInferer(slice_inferer())
    for network in (single, ensemble):
        plain, augmented = probabilities(slice_inferer(), network, x), probabilities(augmenting, network, x)
        assert (plain - augmented).abs().max() > 1e-4  # the variants change the probabilities
        expected = plain if network is ensemble else augmented
        torch.testing.assert_close(probabilities(skipping, network, x), expected)
        # as inference.yaml wires it: autocast outside, handing the inferer a wrapper of the network
        autocast = probabilities(inferers.AutocastInferer(skipping, "cpu"), network, x)
        reference = inferers.AutocastInferer(slice_inferer() if network is ensemble else augmenting, "cpu")
        torch.testing.assert_close(autocast, probabilities(reference, network, x))


def test_autocast_runs_the_network_in_bfloat16_and_merges_in_float32():
    x = volume()
    network = _Recorder()
    wrapped = inferers.AutocastInferer(inferers.TestTimeAugmentationInferer(slice_inferer()), "cpu")
    out = probabilities(wrapped, network, x)
    assert network.seen and all(s == (torch.bfloat16, True) for s in network.seen)  # every window, every pass
    assert not torch.is_autocast_enabled("cpu")  # left as found
    with torch.no_grad():
        raw = wrapped(x, network)
    assert raw.dtype == torch.float32
    # bfloat16 keeps 8 bits of mantissa: the probabilities move, but by far less than a class decision
    tta = probabilities(inferers.TestTimeAugmentationInferer(slice_inferer()), network.net, x)
    assert 0 < (out - tta).abs().max() < 0.05


def test_autocast_disabled_is_the_inferer_itself():
    x = volume(1)
    network = _Recorder()
    off = inferers.AutocastInferer(slice_inferer(), "cpu", enabled=False)
    torch.testing.assert_close(probabilities(off, network, x), probabilities(slice_inferer(), network.net, x), rtol=0, atol=0)
    assert network.seen and all(s == (torch.float32, False) for s in network.seen)


def test_autocast_refuses_float16_on_cpu_and_other_types():
    with pytest.raises(ValueError, match="use torch.bfloat16"):
        inferers.AutocastInferer(slice_inferer(), "cpu", dtype=torch.float16)
    with pytest.raises(ValueError, match="bfloat16 or torch.float16"):
        inferers.AutocastInferer(slice_inferer(), "cpu", dtype=torch.float32)


@pytest.mark.parametrize("flags, native", [
    ("fpu sse avx2 avx512f avx512bw avx512_bf16 avx512_vnni", True),
    ("fpu sse avx2 amx_tile amx_bf16 amx_int8", True),
    ("fpu sse avx2 avx512f avx512bw avx512_vnni", False),  # AVX-512 without BF16: bfloat16 emulated, slower
])
def test_native_bfloat16_reads_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert inferers.native_bfloat16("cpu", cpu_flags_file=str(cpuinfo)) is native
    assert inferers.native_bfloat16("cpu", cpu_flags_file=str(tmp_path / "missing")) is False  # not Linux: no autocast
