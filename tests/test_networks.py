"""Shapes of every DALACE path, paper-default code sizes, TorchScript of the inference network."""

from pathlib import Path

import pytest
import torch

from custom.networks import (
    DALACE,
    AnatomyEncoder,
    AnatomyTranslator,
    CycleGAN,
    DomainAgnosticSegmenter,
    ModalityEncoder,
    PairDiscriminator,
    StyleGenerator,
    merge_paths,
)
from tests.helpers import BUNDLE, TINY_NET, tiny_unet


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return DALACE(tiny_unet(), **TINY_NET)


def test_every_path_shape(tiny_model):
    x_ct, x_mr = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    paths = tiny_model(x_ct, x_mr)
    code = (2, 16, 8, 8)  # 4 * 2**2 channels at H/4 x W/4
    expected = {
        "a_ct": code, "a_mr": code, "a_ct_rec": code, "a_mr_rec": code,
        "m_ct": (2, 8), "m_mr": (2, 8), "m_ct_rec": (2, 8), "m_mr_rec": (2, 8),
        "rec_ct": (2, 1, 32, 32), "rec_mr": (2, 1, 32, 32), "ct2mr": (2, 1, 32, 32), "mr2ct": (2, 1, 32, 32),
        "agn_ct": (2, 1, 32, 32), "agn_mr": (2, 1, 32, 32), "seg_ct": (2, 2, 32, 32), "seg_mr": (2, 2, 32, 32),
    }
    assert {k: tuple(v.shape) for k, v in paths.items()} == expected
    # images live in the generator's tanh range
    assert paths["rec_ct"].abs().max() <= 1.0
    d = tiny_model.image_discriminators["ct"](paths["rec_ct"])
    assert d.shape[:2] == (2, 1) and d.ndim == 4
    pd = tiny_model.pair_discriminator(paths["agn_mr"], paths["seg_mr"].softmax(1))
    assert pd.shape[:2] == (2, 1)


def test_paper_default_code_sizes():
    """A 256x256 slice gives a 1 x 256 x 64 x 64 anatomy code and a 1 x 8 modality code."""
    x = torch.randn(1, 1, 256, 256)
    with torch.no_grad():
        assert AnatomyEncoder().eval()(x).shape == (1, 256, 64, 64)
        assert ModalityEncoder().eval()(x).shape == (1, 8)


def test_modality_code_changes_rendering_and_none_is_neutral():
    torch.manual_seed(0)
    gen = StyleGenerator(in_channels=8, mlp_channels=8, num_res_blocks=2).eval()
    a = torch.randn(1, 8, 8, 8)
    with torch.no_grad():
        neutral = gen(a, None)
        styled_1 = gen(a, torch.randn(1, 8))
        styled_2 = gen(a, torch.randn(1, 8))
        # with the MLP's last layer zeroed, any modality code gives exactly the neutral rendering
        gen.mlp[-1].weight.zero_()
        gen.mlp[-1].bias.zero_()
        zero_style = gen(a, torch.randn(1, 8))
    assert neutral.shape == (1, 1, 32, 32)
    assert not torch.allclose(styled_1, styled_2)
    assert not torch.allclose(neutral, styled_1)
    torch.testing.assert_close(zero_style, neutral)


def test_domain_agnostic_image_ignores_modality_encoder(tiny_model):
    """The agnostic path uses the anatomy encoder and generator only: changing the modality encoder is invisible."""
    x = torch.randn(1, 1, 32, 32)
    tiny_model.eval()
    with torch.no_grad():
        before = tiny_model.domain_agnostic_image(x, "mr")
        for p in tiny_model.modality_encoders.parameters():
            p.add_(1.0)
        after = tiny_model.domain_agnostic_image(x, "mr")
    torch.testing.assert_close(before, after)


def test_inference_network_matches_composite_and_scripts(tiny_model):
    x = torch.randn(2, 1, 32, 32)
    tiny_model.eval()
    net = tiny_model.inference_network("mr").eval()
    with torch.no_grad():
        composite = tiny_model.segmenter(tiny_model.domain_agnostic_image(x, "mr"))
        eager = net(x)
        scripted = torch.jit.script(net)(x)
    torch.testing.assert_close(eager, composite)
    torch.testing.assert_close(scripted, eager)


def test_inference_network_state_dict_loads_into_config_built_network(tiny_model):
    """What ``models/model.pt`` stores loads strictly into a network built from hyperparameters."""
    state = tiny_model.inference_network("mr", copy_modules=True).state_dict()
    fresh = DomainAgnosticSegmenter(tiny_unet(), **{k: TINY_NET[k] for k in ("base_channels", "num_res_blocks", "code_dim", "mlp_channels")})
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(1, 1, 32, 32)
    tiny_model.eval(), fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), tiny_model.inference_network("mr")(x))


def test_extra_paths_average_the_probabilities_of_every_path(tiny_model):
    """MR through both anatomy encoders: the softmax of the output is the mean of each path's softmax,
    scripted alike; its state_dict loads strictly into the network inference.yaml builds, and equals
    the merge of the two single-path checkpoints a training writes (model.pt, model_ct.pt)."""
    tiny_model.eval()
    both = tiny_model.inference_network("mr", extra_paths=["ct"]).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        mr, ct = (torch.softmax(tiny_model.inference_network(m)(x), 1) for m in ("mr", "ct"))
        out = both(x)
        scripted = torch.jit.script(both)(x)
    torch.testing.assert_close(torch.softmax(out, 1), (mr + ct) / 2)
    assert not torch.allclose(mr, ct)  # the average is not one of the paths
    torch.testing.assert_close(scripted, out)
    sizes = {k: TINY_NET[k] for k in ("base_channels", "num_res_blocks", "code_dim", "mlp_channels")}
    built = DomainAgnosticSegmenter(tiny_unet(), **sizes, extra_paths=["ct"])
    merged = merge_paths(tiny_model.inference_network("mr").state_dict(), {"ct": tiny_model.inference_network("ct").state_dict()})
    built.load_state_dict(merged, strict=True)
    assert list(merged) == list(both.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(x), out)


def test_extra_paths_refuse_what_cannot_be_one_network(tiny_model):
    other = DALACE(tiny_unet(), **TINY_NET)
    with pytest.raises(ValueError, match="another segmenter"):
        merge_paths(tiny_model.inference_network("mr").state_dict(), {"ct": other.inference_network("ct").state_dict()})
    for bad in (["mr"], ["us"], "ct"):
        with pytest.raises(ValueError, match="extra_paths"):
            tiny_model.inference_network("mr", extra_paths=bad)


def test_pair_discriminator_sees_image_and_mask_channels():
    d = PairDiscriminator(image_channels=1, num_classes=3, channels=4, num_layers=2)
    assert d(torch.randn(1, 1, 32, 32), torch.rand(1, 3, 32, 32)).shape[:2] == (1, 1)
    with pytest.raises(RuntimeError):
        d(torch.randn(1, 1, 32, 32), torch.rand(1, 2, 32, 32))


def test_parameter_groups_partition_the_model(tiny_model):
    groups = tiny_model.parameter_groups()
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    everything = ids(tiny_model.parameters())
    assert ids(groups["autoencoder"]) | ids(groups["image_discriminators"]) | ids(groups["pair_discriminator"]) | ids(
        groups["segmenter"]
    ) == everything
    assert ids(groups["anatomy"]) < ids(groups["autoencoder"])
    assert not ids(groups["segmenter"]) & ids(groups["autoencoder"])


def _prefixed(module: torch.nn.Module, prefix: str) -> list[str]:
    return [f"{prefix}{k}" for k in module.state_dict()]


def test_state_dict_keys_are_those_of_the_shipped_checkpoints(tiny_model):
    """The encoder-generator pair is built once (AnatomyTranslator), but every network keeps the keys its
    checkpoints were saved with: DALACE per modality in anatomy_encoders/generators, CycleGAN's
    translators as pairs, and both inference networks with the keys of bundle/models/model.pt."""
    pair_kw = {k: TINY_NET[k] for k in ("base_channels", "num_res_blocks", "code_dim", "mlp_channels")}
    pair = AnatomyTranslator(**pair_kw)
    encoder, generator = _prefixed(pair.anatomy_encoder, ""), _prefixed(pair.generator, "")
    keys = list(tiny_model.state_dict())
    for m in ("ct", "mr"):
        assert [k for k in keys if k.startswith(f"anatomy_encoders.{m}.")] == [f"anatomy_encoders.{m}.{k}" for k in encoder]
        assert [k for k in keys if k.startswith(f"generators.{m}.")] == [f"generators.{m}.{k}" for k in generator]
    cyclegan = CycleGAN(tiny_unet(), **{k: TINY_NET[k] for k in ("base_channels", "num_res_blocks", "mlp_channels", "disc_channels", "disc_layers")})
    for d in ("ct2mr", "mr2ct"):
        assert _prefixed(cyclegan.translators[d], f"translators.{d}.") == _prefixed(pair, f"translators.{d}.")
    built = list(DomainAgnosticSegmenter(tiny_unet(), **pair_kw).state_dict())  # as inference.yaml's network_def
    for net in (
        tiny_model.inference_network("mr"),
        cyclegan.inference_network("mr", task_driven=True),
        cyclegan.inference_network("ct", task_driven=False),
    ):
        assert list(net.state_dict()) == built
    shipped = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    shipped_ct = torch.load(BUNDLE / "models" / "model_ct.pt", map_location="cpu", weights_only=True)
    both = list(DomainAgnosticSegmenter(tiny_unet(), **pair_kw, extra_paths=["ct"]).state_dict())
    assert list(tiny_model.inference_network("mr", extra_paths=["ct"]).state_dict()) == both
    top = lambda keys: list(dict.fromkeys(".".join(k.split(".")[: 3 if k.startswith("extra_paths.") else 1]) for k in keys))  # noqa: E731
    assert top(shipped) == top(both)  # model.pt: MR's path and CT's, one segmenter (extra_paths: [ct])
    assert top(shipped_ct) == top(built)
    assert cyclegan.inference_network("mr") is cyclegan.segmenter
    assert cyclegan.inference_network("ct", task_driven=True) is cyclegan.segmenter


class _SizeRecorder(torch.nn.Module):
    """A 1x1 convolution that records the slice size it was given."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.sizes = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return self.conv(x)


def test_rescaled_input_runs_a_member_at_its_own_pixel_size():
    """A member trained at 2 mm given 3 mm slices sees them resized to 2 mm pixels (96 -> 144) and answers on
    the slice's pixels; at its own spacing it is the network itself; the state_dict names its spacing, and
    a loaded trained_spacing is the one used."""
    from custom.networks import RescaledInput

    torch.manual_seed(0)
    i, j = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    x = torch.stack([torch.sin(i / 9) + torch.cos(j / 13), torch.cos(i / 11) * torch.sin(j / 7)])[:, None]  # smooth slices
    inner = _SizeRecorder()
    same = RescaledInput(inner, 3.0, [3.0, 3.0, 3.0])
    assert torch.equal(same(x), inner.conv(x)) and inner.sizes == [(96, 96)]
    finer = RescaledInput(inner, 2.0, [3.0, 3.0, 3.0])
    out = finer(x)
    assert out.shape == (2, 2, 96, 96) and inner.sizes[-1] == (144, 144)
    # a 1x1 convolution commutes with resizing: on smooth slices, the same logits up to interpolation error
    torch.testing.assert_close(out[..., 8:-8, 8:-8], inner.conv(x)[..., 8:-8, 8:-8], atol=0.05, rtol=0)
    assert set(finer.state_dict()) == {"network.conv.weight", "network.conv.bias", "trained_spacing"}
    state = finer.state_dict()
    state["trained_spacing"] = torch.tensor([1.5, 1.5])
    finer.load_state_dict(state)
    finer(x)
    assert inner.sizes[-1] == (192, 192)
    with pytest.raises(ValueError, match="spacings must be positive"):
        RescaledInput(inner, 0.0, 3.0)
