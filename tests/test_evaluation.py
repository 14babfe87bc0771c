"""Evaluation: Dice, HD95 and ASD (mm) from MONAI's metrics against an independent scipy computation,
on known masks and end to end through configs/inference.yaml + configs/evaluate.yaml."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from monai.handlers import MeanDice, from_engine
from monai.metrics import HausdorffDistanceMetric, SurfaceDistanceMetric
from scipy import ndimage

from custom.handlers import MetricsReport, SpacingMetricHandler

from tests.helpers import BUNDLE  # noqa: E402
CONFIGS = [str(BUNDLE / "configs" / "inference.yaml"), str(BUNDLE / "configs" / "evaluate.yaml")]


# ------------------------------------------------------------------ independent reference (scipy)
def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the mask with a face neighbour outside it (outside the volume counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def directed_distances(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) from every surface voxel of ``a`` to the nearest surface voxel of ``b``."""
    return ndimage.distance_transform_edt(~surface(b), sampling=spacing)[surface(a)]


def reference_metrics(pred: np.ndarray, gt: np.ndarray, spacing) -> dict[str, float]:
    pred, gt = pred.astype(bool), gt.astype(bool)
    dice = 2.0 * (pred & gt).sum() / (pred.sum() + gt.sum())
    d_pg, d_gp = directed_distances(pred, gt, spacing), directed_distances(gt, pred, spacing)
    hd95 = max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))
    asd = np.concatenate([d_pg, d_gp]).mean()
    return {"dice": float(dice), "hd95": float(hd95), "asd": float(asd)}


def read_csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------ known masks
def box(shape, lo, hi) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return m


def ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def onehot(mask: np.ndarray, affine: np.ndarray, name: str) -> MetaTensor:
    m = torch.as_tensor(mask.astype(np.float32))[None]
    return MetaTensor(torch.cat([1 - m, m]), affine=torch.as_tensor(affine), meta={"filename_or_obj": name})


KNOWN = [  # (name, shape, affine (its column norms are the spacing), gt, pred)
    ("box_shift", (20, 20, 10), np.diag([1.5, 0.8, 2.5, 1.0]), box((20, 20, 10), (4, 5, 2), (14, 15, 8)),
     box((20, 20, 10), (6, 5, 3), (16, 15, 9))),
    ("sphere_lps", (24, 22, 12), np.array([[-0.7, 0, 0, 90.0], [0, -0.7, 0, 80.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]]),
     ellipsoid((24, 22, 12), (12, 11, 6), (8, 7, 4)), ellipsoid((24, 22, 12), (11, 11, 5), (7, 8, 3))),
    ("permuted", (16, 18, 14),
     np.array([[0, -1.2, 0, 0], [2.0, 0, 0, 0], [0, 0, 0.9, 0], [0, 0, 0, 1]]),  # axes permuted: spacing (2.0, 1.2, 0.9)
     box((16, 18, 14), (2, 3, 1), (12, 14, 13)), ellipsoid((16, 18, 14), (7, 8, 7), (6, 6, 6))),
]


def monai_summary(folder: Path, metric: str) -> dict:
    """The case row of MONAI MetricsSaver's ``<metric>_summary.csv`` (one class: ``class0``)."""
    return next(r for r in read_csv(folder / f"{metric}_summary.csv") if r["class"] == "class0")


def test_metric_handlers_match_scipy_on_known_masks(tmp_path):
    engine = Engine(lambda e, batch: batch)
    out = from_engine(["pred", "label"])
    MeanDice(include_background=False, output_transform=out).attach(engine, "dice")
    SpacingMetricHandler(HausdorffDistanceMetric(include_background=False, percentile=95), out).attach(engine, "hd95")
    SpacingMetricHandler(SurfaceDistanceMetric(include_background=False, symmetric=True), out).attach(engine, "asd")
    # and the voxel-unit HD95 that MONAI's own handler would give, to show that spacing matters
    SpacingMetricHandler(HausdorffDistanceMetric(include_background=False, percentile=95), out, spacing=1.0).attach(
        engine, "hd95_voxels"
    )
    MetricsReport(str(tmp_path), metrics=["dice", "hd95", "asd"]).attach(engine)
    batches = [
        [{"pred": onehot(p, a, f"/data/{n}.nii.gz"), "label": onehot(g, a, f"/data/{n}_label.nii.gz"),
          "image": onehot(g, a, f"/data/{n}.nii.gz")}]
        for n, _, a, g, p in KNOWN
    ]
    engine.run(batches, max_epochs=1)

    expected = [reference_metrics(p, g, np.linalg.norm(a[:3, :3], axis=0)) for _, _, a, g, p in KNOWN]
    details = engine.state.metric_details
    for key in ("dice", "hd95", "asd"):
        got = details[key].cpu().numpy().ravel()
        np.testing.assert_allclose(got, [e[key] for e in expected], rtol=1e-5, err_msg=key)
    voxels = [reference_metrics(p, g, (1.0, 1.0, 1.0))["hd95"] for _, _, a, g, p in KNOWN]
    np.testing.assert_allclose(details["hd95_voxels"].cpu().numpy().ravel(), voxels, rtol=1e-5)
    assert not np.allclose(voxels, [e["hd95"] for e in expected])
    # the box shifted by 2 voxels along x (1.5 mm) and 1 along z (2.5 mm), by hand:
    assert expected[0]["dice"] == pytest.approx(2 * (8 * 10 * 5) / (2 * 10 * 10 * 6))

    rows = read_csv(tmp_path / "metrics_per_case.csv")
    assert [r["case"] for r in rows] == [n for n, *_ in KNOWN]
    for r, e in zip(rows, expected):
        for key in ("dice", "hd95", "asd"):
            assert float(r[key]) == pytest.approx(e[key], rel=1e-5)
    for key in ("dice", "hd95", "asd"):  # MONAI MetricsSaver's summary (4 decimals)
        summary = monai_summary(tmp_path, key)
        values = [e[key] for e in expected]
        assert float(summary["mean"]) == pytest.approx(np.mean(values), abs=1e-4)
        assert float(summary["std"]) == pytest.approx(np.std(values), abs=1e-4)
        assert float(summary["notnans"]) == 3
    md = (tmp_path / "metrics_summary.md").read_text()
    dice = [e["dice"] for e in expected]
    assert f"| dice | {np.mean(dice):.3f} ({np.std(dice):.3f}) | 3 |" in md


def test_empty_prediction_is_counted_not_averaged(tmp_path):
    engine = Engine(lambda e, batch: batch)
    out = from_engine(["pred", "label"])
    MeanDice(include_background=False, output_transform=out).attach(engine, "dice")
    SpacingMetricHandler(HausdorffDistanceMetric(include_background=False, percentile=95), out).attach(engine, "hd95")
    MetricsReport(str(tmp_path), metrics=["dice", "hd95"]).attach(engine)
    _, shape, a, g, p = KNOWN[0]
    cases = [("good", p), ("empty", np.zeros(shape, bool))]
    engine.run([[{"pred": onehot(m, a, n), "label": onehot(g, a, n), "image": onehot(g, a, n)}] for n, m in cases])
    good = reference_metrics(p, g, np.diag(a)[:3])
    assert float(monai_summary(tmp_path, "dice")["mean"]) == pytest.approx(good["dice"] / 2, abs=1e-4)  # Dice of empty = 0
    assert float(monai_summary(tmp_path, "hd95")["mean"]) == pytest.approx(good["hd95"], abs=1e-4)
    assert float(monai_summary(tmp_path, "hd95")["notnans"]) == 1
    md = (tmp_path / "metrics_summary.md").read_text()
    assert f"| hd95 | {good['hd95']:.3f} (0.000) | 1 (+1 NaN) |" in md and f"| dice | {good['dice'] / 2:.3f} " in md


# --------------------------------------------------------------------------------- end to end
def write_case(folder: Path, name: str, shape, affine, centre, radii, label_shift=(2, 0, 1), liver_value=1) -> dict:
    """An ellipsoid 'liver' in the image, and a label (liver marked ``liver_value``) that misses it by
    ``label_shift`` voxels, so that the metrics are not trivially perfect."""
    liver = ellipsoid(shape, centre, radii)
    label = (liver_value * ellipsoid(shape, np.add(centre, label_shift), radii)).astype(np.uint8)
    image = (20 + 80 * liver).astype(np.int16)  # liver bright: maps to +1, background to -1
    nib.save(nib.Nifti1Image(image, affine), str(folder / f"{name}.nii.gz"))
    nib.save(nib.Nifti1Image(label, affine), str(folder / f"{name}_label.nii.gz"))
    item = {"image": f"{name}.nii.gz", "label": f"{name}_label.nii.gz"}  # relative to the datalist
    return item if liver_value == 1 else {**item, "liver_value": liver_value}


@pytest.mark.slow
def test_evaluate_config_end_to_end(tmp_path):
    """Two labelled MR-like volumes (LAS and LPS, anisotropic) through inference + evaluation with a
    1x1 convolution as network (liver where the normalized intensity > 0), so the prediction is the
    bright ellipsoid only if the resampling to 1.5 mm and back is right. The metrics in the CSV must
    be those of the written masks against the labels, recomputed independently."""
    from monai.bundle import ConfigWorkflow

    data = tmp_path / "data"
    data.mkdir()
    las = np.array([[-1.8, 0, 0, 60.0], [0, 1.4, 0, -30.0], [0, 0, 3.0, 10.0], [0, 0, 0, 1]])
    lps = np.array([[-2.2, 0, 0, 40.0], [0, -1.1, 0, 50.0], [0, 0, 4.0, -5.0], [0, 0, 0, 1]])
    datalist = [  # the project's datalist format (custom.data): relative paths, a liver value per item
        write_case(data, "case_las", (40, 36, 12), las, (20, 17, 6), (12, 11, 4)),
        write_case(data, "case_lps", (30, 44, 10), lps, (14, 22, 5), (9, 15, 3), liver_value=5),
    ]
    (data / "datalist.json").write_text(json.dumps({"ct": [], "mr": datalist}))
    conv = torch.nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([-10.0, 10.0]).view(2, 1, 1, 1))
        conv.bias.zero_()
    torch.save(conv.state_dict(), tmp_path / "model.pt")
    out = tmp_path / "eval"
    workflow = ConfigWorkflow(
        config_file=CONFIGS,
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        input=str(data / "datalist.json"),
        ckpt_path=str(tmp_path / "model.pt"),
        output_dir=str(out),
        network_def={"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 1},
        bias_correction=False,
        largest_component=False,
        num_workers=0,
        roi_size=[64, 64],
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()

    rows = {r["case"]: r for r in read_csv(out / "metrics_per_case.csv")}
    assert sorted(rows) == ["case_las", "case_lps"]
    expected = {}
    for d in datalist:
        name = Path(d["image"]).name[: -len(".nii.gz")]
        lab = nib.load(str(data / d["label"]))
        seg = nib.load(str(out / f"{name}_seg.nii.gz"))
        assert seg.shape == lab.shape
        np.testing.assert_allclose(seg.affine, lab.affine, atol=1e-4)
        gt = np.asarray(lab.dataobj) == d.get("liver_value", 1)
        expected[name] = reference_metrics(np.asarray(seg.dataobj) > 0, gt, lab.header.get_zooms())
        for key in ("dice", "hd95", "asd"):
            assert float(rows[name][key]) == pytest.approx(expected[name][key], rel=1e-4), (name, key)
        assert expected[name]["hd95"] > 1.0  # the label misses the liver by a few mm
        # the geometry round trip is right: the prediction is the image's liver
        liver = np.asarray(nib.load(str(data / d["image"])).dataobj) > 60
        assert reference_metrics(np.asarray(seg.dataobj) > 0, liver, lab.header.get_zooms())["dice"] > 0.95
    for key in ("dice", "hd95", "asd"):
        assert float(monai_summary(out, key)["mean"]) == pytest.approx(np.mean([e[key] for e in expected.values()]), abs=1e-4)
    for f in ("metrics_summary.md", "metrics.csv", "dice_raw.csv", "hd95_raw.csv", "asd_raw.csv", "dice_summary.csv"):
        assert (out / f).is_file(), f
