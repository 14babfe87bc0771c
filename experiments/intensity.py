"""Where the liver lies after the bundle's MR normalization, per labelled MR volume of a datalist.

The figures behind the docs' account of chaos_t2_36 (its cyst holds the upper percentiles, so its liver
comes out darker than in the other volumes): the bundle's own MR chain (``train.yaml``'s
``preprocessing_mr``, with the given override configs, e.g. ``experiments/configs/foreground_norm.yaml``)
on each image and its label.
"""

from __future__ import annotations

import numpy as np

from custom.data import datalist_items

from .protocol import BUNDLE_CONFIGS


def liver_intensity(datalist: str, dataset_dir: str | None = None, configs: tuple[str, ...] = (), bias_correction: bool = True) -> list[dict]:
    """Per labelled MR item: the median liver intensity after normalization, the normalization's
    upper percentile (``mr_percentiles[1]`` of the raw image) over the raw liver median, and how far
    above the lower percentile the upper one lies, in multiples of the 90th's distance (the tail
    ratio that ``mr_tail_cap`` bounds)."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config([str(BUNDLE_CONFIGS / "train.yaml"), *map(str, configs)])
    parser.update({"bundle_root": str(BUNDLE_CONFIGS.parent), "bias_correction": bool(bias_correction)})
    chain = parser.get_parsed_content("preprocessing_mr")
    normalize = parser.get_parsed_content("normalize_mr")
    if not chain or chain[-1] is not normalize:  # the liver is measured right after the normalization
        raise ValueError(f"preprocessing_mr no longer ends with normalize_mr: {[type(t).__name__ for t in chain]}")
    lower, upper = (float(q) for q in parser.get_parsed_content("mr_percentiles"))
    before_norm = Compose(chain[:-1])
    rows = []
    for item in datalist_items(datalist, dataset_dir, modality="mr", role="all", require_labels=True):
        d = before_norm(dict(item))
        raw, liver = np.asarray(d["image"])[0], np.asarray(d["label"])[0] > 0
        if not liver.any():
            raise ValueError(f"{item['label']}: no liver voxel after preprocessing")
        normed = np.asarray(normalize(d)["image"])[0]
        rows.append({
            "id": item["id"],
            "liver_median": float(np.median(normed[liver])),
            "upper_percentile_over_liver": float(np.percentile(raw, upper) / np.median(raw[liver])),
            "tail_ratio": float(np.ptp(np.percentile(raw, [lower, upper])) / np.ptp(np.percentile(raw, [lower, 90.0]))),
        })
    return rows
