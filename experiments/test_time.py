"""Test-time augmentation probed on a trained model: does averaging over gamma and in-plane zoom help?

Not an inference option yet: a measurement, on the training's grid. Each labelled MR volume goes
through ``train.yaml``'s ``preprocessing_mr`` (image and label, so the label lands on the same grid),
the model of ``inference.yaml`` segments every axial slice as inference does, and the probabilities are
averaged over variants inside what training augments: gamma on the [-1, 1] range (training draws
0.7-1.5) and in-plane zoom (training scales by up to 10 %). Each variant's mask then takes inference's
postprocessing on that grid (largest component, thin bridges cut) and is scored by Dice.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from custom.data import datalist_items
from custom.handlers import check_checkpoint, require_file
from custom.transforms import detach_thin_bridges

from .protocol import BUNDLE_CONFIGS

GAMMAS = (0.8, 1.25)
ZOOMS = (0.9, 1.1)


def gamma(x: torch.Tensor, g: float) -> torch.Tensor:
    """Gamma on the [-1, 1] range, as training's RandAdjustContrastd leaves the range's ends in place."""
    return 2 * ((x + 1) / 2).clamp(0, 1) ** g - 1


def variant_probabilities(image: torch.Tensor, segment, gammas=GAMMAS, zooms=ZOOMS) -> dict[str, np.ndarray]:
    """Liver probabilities of the (1, H, W, D) ``image`` by ``segment`` ((1, 1, H, W, D) -> logits) for
    the image as it is (``plain``), averaged with its gammas (``gamma``), with its in-plane zooms (each
    zoomed back to the grid; ``zoom``), and with both (``gamma_zoom``)."""
    def liver(x):
        return torch.softmax(segment(x[None]), 1)[0, 1]

    plain = liver(image)
    by_gamma = [liver(gamma(image, g)) for g in gammas]
    by_zoom = []
    for z in zooms:
        zoomed = F.interpolate(image[None], scale_factor=(z, z, 1.0), mode="trilinear", align_corners=False)[0]
        by_zoom.append(F.interpolate(liver(zoomed)[None, None], size=plain.shape, mode="trilinear", align_corners=False)[0, 0])
    mean = lambda ps: torch.stack(ps).mean(0).numpy()  # noqa: E731
    return {"plain": plain.numpy(), "gamma": mean([plain, *by_gamma]), "zoom": mean([plain, *by_zoom]),
            "gamma_zoom": mean([plain, *by_gamma, *by_zoom])}


def probe(ckpt_path: str, datalist: str, dataset_dir: str | None = None, configs: tuple[str, ...] = (),
          bias_correction: bool = True) -> list[dict]:
    """Per labelled MR item of ``datalist``: Dice of each variant of :func:`variant_probabilities` by
    the model in ``ckpt_path`` (``inference.yaml``'s network_def, with ``configs`` composed after both
    configs, e.g. an experiment's size.yaml)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose
    from monai.transforms.utils import get_largest_connected_component_mask

    def parsed(first: str) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config([str(BUNDLE_CONFIGS / first), *map(str, configs)])
        parser.update({"bundle_root": str(BUNDLE_CONFIGS.parent), "bias_correction": bool(bias_correction)})
        return parser

    preprocessing = Compose(parsed("train.yaml").get_parsed_content("preprocessing_mr"))
    inference = parsed("inference.yaml")
    network = inference.get_parsed_content("network_def")
    check_checkpoint(require_file(ckpt_path, "model checkpoint"), "model checkpoint", network=network)  # names the file
    network.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))
    network.eval()
    inferer = inference.get_parsed_content("inferer")
    spacing = [float(s) for s in inference.get_parsed_content("spacing")]
    radius = float(inference.get_parsed_content("bridge_radius_mm"))

    def segment(x):
        with torch.no_grad():
            return inferer(x.float(), network)

    rows = []
    for item in datalist_items(datalist, dataset_dir, modality="mr", role="all", require_labels=True):
        d = preprocessing(dict(item))
        liver = np.asarray(d["label"])[0] > 0
        if not liver.any():
            raise ValueError(f"{item['label']}: no liver voxel after preprocessing")
        row = {"id": item["id"]}
        for name, prob in variant_probabilities(torch.as_tensor(np.asarray(d["image"])), segment).items():
            mask = get_largest_connected_component_mask(torch.as_tensor(prob > 0.5)).numpy()
            mask = detach_thin_bridges(mask, radius, spacing)
            row[name] = float(2 * (mask & liver).sum() / (mask.sum() + liver.sum()))
        rows.append(row)
    return rows
