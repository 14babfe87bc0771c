"""Test-time augmentation probed on a trained model: which of its variants help, on the training's grid.

The bundle's option (``inference.yaml``'s ``test_time_augmentation``, ``custom/inferers``) averages
gammas and in-plane zooms together; this probe scores them apart. Each labelled MR volume goes through
``train.yaml``'s ``preprocessing_mr`` (image and label, so the label lands on the same grid), the model
of ``inference.yaml`` segments every axial slice as inference does, alone and inside the bundle's
``TestTimeAugmentationInferer`` with the gammas, the zooms, or both; each mask then takes inference's
postprocessing on that grid (largest component, thin bridges cut) and is scored by Dice.
"""

from __future__ import annotations

import numpy as np
import torch

from custom.data import datalist_items
from custom.handlers import check_checkpoint, require_file
from custom.inferers import TestTimeAugmentationInferer
from custom.transforms import detach_thin_bridges

from .protocol import BUNDLE_CONFIGS

def variant_probabilities(image: torch.Tensor, inferer, network, gammas, zooms) -> dict[str, np.ndarray]:
    """Liver probabilities of the (1, H, W, D) ``image`` by ``inferer`` and ``network`` for the image as
    it is (``plain``), averaged with its gammas (``gamma``), its in-plane zooms (``zoom``), or both
    (``gamma_zoom``, the bundle's option)."""
    variants = {"plain": inferer, "gamma": TestTimeAugmentationInferer(inferer, gammas, ()),
                "zoom": TestTimeAugmentationInferer(inferer, (), zooms), "gamma_zoom": TestTimeAugmentationInferer(inferer, gammas, zooms)}
    with torch.no_grad():
        return {k: torch.softmax(v(image[None].float(), network).float(), 1)[0, 1].numpy() for k, v in variants.items()}


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
    inferer = inference.get_parsed_content("slice_inferer")
    gammas, zooms = inference.get_parsed_content("test_time_gammas"), inference.get_parsed_content("test_time_zooms")
    spacing = [float(s) for s in inference.get_parsed_content("spacing")]
    radius = float(inference.get_parsed_content("bridge_radius_mm"))

    rows = []
    for item in datalist_items(datalist, dataset_dir, modality="mr", role="all", require_labels=True):
        d = preprocessing(dict(item))
        liver = np.asarray(d["label"])[0] > 0
        if not liver.any():
            raise ValueError(f"{item['label']}: no liver voxel after preprocessing")
        row = {"id": item["id"]}
        for name, prob in variant_probabilities(torch.as_tensor(np.asarray(d["image"])), inferer, network, gammas, zooms).items():
            mask = get_largest_connected_component_mask(torch.as_tensor(prob > 0.5)).numpy()
            mask = detach_thin_bridges(mask, radius, spacing)
            row[name] = float(2 * (mask & liver).sum() / (mask.sum() + liver.sum()))
        rows.append(row)
    return rows
