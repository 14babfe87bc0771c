"""The experiment command (experiments/): folds, tables, and the whole protocol at its smallest setting.

The slow tests run the real bundle configs (train.yaml + variants, inference.yaml + evaluate.yaml)
on a tiny k-fold dataset of reoriented copies of ``bundle/sample_data``, with tiny widths, 2 folds
and 1 epoch, and check that tables, per-run records and the three figures come out, and that a
second invocation redoes nothing.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.helpers import REPO, liver_and_drifting_bowel  # noqa: E402
if str(REPO) not in sys.path:  # the experiments package lives at the repository root
    sys.path.insert(0, str(REPO))

from custom.data import select_items  # noqa: E402
from experiments.data import task_datalist, tiny_sample_dataset  # noqa: E402
from experiments.runner import Experiment, Settings, size_override  # noqa: E402
from experiments import runner  # noqa: E402
from experiments.protocol import TABLES, Table  # noqa: E402
from experiments.tables import write_tables  # noqa: E402

SAMPLE = REPO / "bundle" / "sample_data"


def _items(n_ct=3, n_mr=6):
    ct = [{"id": f"ct{i}", "image": f"/x/ct{i}.nii.gz", "label": f"/x/ct{i}_l.nii.gz"} for i in range(n_ct)]
    mr = [{"id": f"mr{i}", "image": f"/x/mr{i}.nii.gz", "label": f"/x/mr{i}_l.nii.gz", "domain": "T2-SPIR" if i % 3 else "T1"} for i in range(n_mr)]
    return {"ct": ct, "mr": mr}


def test_task_datalist_selects_domains_and_splits_every_case_once():
    dl = task_datalist(_items(), num_folds=2, seed=0, mr_domains=["t2-spir"], ct_split=False)
    assert {i["id"] for i in dl["mr"]} == {"mr1", "mr2", "mr4", "mr5"}
    assert all("fold" not in i for i in dl["ct"])  # CT trains in every fold
    held_out = [i["id"] for k in range(2) for i in select_items(dl["mr"], k, "val", labelled=True)]
    assert sorted(held_out) == ["mr1", "mr2", "mr4", "mr5"]  # every MR case tested exactly once
    for k in range(2):
        train = {i["id"] for i in select_items(dl["mr"], k, "train")}
        assert train.isdisjoint(i["id"] for i in select_items(dl["mr"], k, "val", labelled=True))
        assert len(select_items(dl["ct"], k, "train", labelled=True)) == 3
    # the same MR selection gets the same folds (models shared between tasks see the same split)
    again = task_datalist(_items(), num_folds=2, seed=0, mr_domains=["T2-SPIR"], ct_split=True)
    assert [i["fold"] for i in again["mr"]] == [i["fold"] for i in dl["mr"]]
    assert sorted(i["fold"] for i in again["ct"]) == [0, 0, 1]
    with pytest.raises(ValueError, match="no MR items"):
        task_datalist(_items(), 2, 0, mr_domains=["T1-dual"])


def test_items_get_absolute_paths_from_a_relative_dataset_dir(tmp_path, monkeypatch):
    """Runs read the task datalists from the output folder: a relative --dataset_dir must not leak."""
    from experiments.data import read_items

    (tmp_path / "data").mkdir()
    (tmp_path / "dl.json").write_text(json.dumps({"ct": [{"image": "ct/a.nii.gz", "label": "ct/a_l.nii.gz"}], "mr": [{"image": "mr/b.nii.gz"}]}))
    monkeypatch.chdir(tmp_path)
    items = read_items(str(tmp_path / "dl.json"), "data")
    assert items["ct"][0]["image"] == str(tmp_path / "data" / "ct" / "a.nii.gz")
    assert items["ct"][0]["label"] == str(tmp_path / "data" / "ct" / "a_l.nii.gz")
    assert items["mr"][0]["image"] == str(tmp_path / "data" / "mr" / "b.nii.gz")


def test_only_folds_selects_the_folds_to_run(tmp_path):
    run = lambda **kw: Experiment(Settings(datalist="d.json", output=str(tmp_path), folds=3, **kw)).folds()  # noqa: E731
    assert run() == [0, 1, 2]
    assert run(only_folds="0,2") == [0, 2]
    assert run(only_folds=1) == [1]  # fire passes a lone number as an int
    with pytest.raises(ValueError, match="outside 0..2"):
        run(only_folds="3")


def test_an_output_folder_refuses_other_settings(tmp_path):
    """Runs of other sizes or splits must not join a folder's tables: the second invocation fails,
    naming each option that differs; other tables, methods, folds or threads are fine."""
    first = Settings(datalist="d.json", output=str(tmp_path), folds=3, num_res_blocks=2, ct_split=False)
    (tmp_path / "settings.json").write_text(json.dumps(asdict(first)))
    same = Settings(datalist="d.json", output=str(tmp_path), folds=3, num_res_blocks=2, ct_split=False,
                    tables="A", methods="dalace", only_folds="1", threads=None)
    Experiment(same).check_same_settings()
    other = Settings(datalist="d.json", output=str(tmp_path), folds=3)
    with pytest.raises(ValueError, match="other settings") as err:
        Experiment(other).check_same_settings()
    assert "num_res_blocks: 2 there, 4 now" in str(err.value) and "ct_split: False there, True now" in str(err.value)
    assert "folds:" not in str(err.value)


def test_reusing_a_run_whose_configs_changed_warns(tmp_path, caplog):
    """A finished run is reused as it is; if a config it trained from has changed since, the log says so."""
    config = tmp_path / "train.yaml"
    config.write_text("a: 1\n")
    run_dir = tmp_path / "runs" / "dalace-abc"
    run_dir.mkdir(parents=True)
    record = {"configs": [str(config)], "config_digests": {str(config): runner._file_digest(config)}}
    (run_dir / "done.json").write_text(json.dumps(record))
    exp = Experiment(Settings(datalist="d.json", output=str(tmp_path)))
    runner.log.disabled = False
    with caplog.at_level("WARNING", logger=runner.log.name):
        assert exp.train({"dir": run_dir}) == record
        assert not caplog.records
        config.write_text("a: 2\n")
        exp.train({"dir": run_dir})
    assert "trained before these configs changed" in caplog.text and str(config) in caplog.text


def test_training_seed_repeats_the_trainings_on_the_same_folds(tmp_path):
    """Without training_seed a run is keyed and seeded as before it existed (the fold seed); with it, the
    same fold's items train in another run folder with that seed."""
    from experiments.protocol import METHODS

    datalist = task_datalist(_items(), 3, 0, None, False)

    def spec(**kw):
        exp = Experiment(Settings(datalist="d.json", output=str(tmp_path), folds=3, **kw))
        exp._datalists = {"da": datalist}
        return exp.run_spec("da", METHODS["da"]["dalace"], 1)

    default, same, repeat = spec(), spec(training_seed=0), spec(training_seed=1)
    assert default["dir"] == same["dir"] and default["overrides"]["seed"] == 0
    assert repeat["dir"] != default["dir"] and repeat["overrides"]["seed"] == 1
    assert repeat["train_items"] == default["train_items"] and repeat["dir"].name.startswith("dalace-")


def test_recorded_commands_write_booleans_as_the_bundle_cli_reads_them():
    """fire reads "false" as a string, which configs take as true (N4 would run twice): records say False."""
    cmd = runner._cli(["train.yaml"], {"bias_correction": False, "resume": True, "fold": 0, "spacing": [3.0]}, "training")
    assert "--bias_correction False" in cmd and "--resume True" in cmd and "--fold 0" in cmd
    assert "false" not in cmd.replace("False", "")


def test_a_table_with_two_rows_of_one_label_is_refused():
    """Tables are written by label: a repeated label would show one method's figures under another's."""
    with pytest.raises(ValueError, match="table X: two rows are labelled \\['as above'\\]"):
        Table("X", "x", (("as above", "da", "dalace"), ("as above", "da", "dalace_both_paths")), (("DSC", None, "mr"),))


def test_size_override_follows_the_options():
    s = Settings(datalist="d.json", output="o", epochs=20, width=8, spacing=5, slice_size=64)
    o = size_override(s)
    assert o["spacing"] == [5.0] * 3 and o["roi_size"] == [64, 64] and o["width"] == 8
    assert o["max_epochs"] == 20 and o["pair_warmup_epochs"] == 5  # the paper's 600/2600
    assert o["segmenter#features"] == [4, 4, 8, 16, 32, 4]
    assert size_override(Settings(datalist="d", output="o"))["segmenter#features"] == [32, 32, 64, 128, 256, 32]


def test_a_command_with_failed_runs_exits_non_zero_naming_them(tmp_path, monkeypatch):
    import experiments.__main__ as cli

    cells = [{"table": "1", "task": "da", "method": "dalace", "row": "DALACE", "column": "DSC (std)", "test": "mr", "fold": 0,
              "run": "dalace-abc", "error": "RuntimeError: boom"},
             {"table": "1", "task": "da", "method": "unet_ct", "row": "lowerbound (U-Net trained on CT)", "column": "DSC (std)",
              "test": "mr", "fold": 0, "run": "unet_ct-def", "cases": [{"case": "a", "dice": 0.5, "hd95": 1.0, "asd": 1.0}]}]

    def fake_run(self):
        (tmp_path / "results.json").write_text(json.dumps({"cells": cells}))
        return {"cells": cells}

    monkeypatch.setattr(Experiment, "run", fake_run)
    monkeypatch.setattr(Experiment, "__init__", lambda self, settings: None)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(str(tmp_path / "datalist.json"), str(tmp_path))
    assert "1 run(s) failed" in str(exit_info.value.code) and "dalace-abc: RuntimeError: boom" in str(exit_info.value.code)
    assert "unet_ct-def" not in str(exit_info.value.code)
    assert (tmp_path / "table1_da.md").exists()  # the tables are still written first
    cells.pop(0)
    cli.run(str(tmp_path / "datalist.json"), str(tmp_path))  # all runs done: a normal return


def test_tables_are_mean_std_over_all_held_out_cases(tmp_path):
    cell = {"table": "3", "task": "joint", "method": "dalace", "row": "Joint CT&MR DALACE"}
    results = {
        "cells": [
            {**cell, "column": "MR tested DSC", "test": "mr", "fold": 0, "cases": [{"case": "a", "dice": 0.8, "hd95": 5, "asd": 1}, {"case": "b", "dice": 0.6, "hd95": 7, "asd": 2}]},
            {**cell, "column": "MR tested DSC", "test": "mr", "fold": 1, "cases": [{"case": "c", "dice": 1.0, "hd95": 1, "asd": 0}]},
            {**cell, "column": "CT tested DSC", "test": "ct", "fold": 0, "error": "RuntimeError: boom"},
            {**cell, "column": "CT tested DSC", "test": "ct", "fold": 1, "cases": [{"case": "d", "dice": 0.5, "hd95": 1, "asd": 0}]},
        ]
    }
    text = write_tables(tmp_path, results)
    assert "| Joint CT&MR DALACE | 0.500 (0.000) [1 fold(s) failed] | 0.800 (0.163) |" in text
    rows = list(csv.DictReader(open(tmp_path / "table3_joint.csv")))
    mr = next(r for r in rows if r["column"] == "MR tested DSC")
    assert int(mr["cases"]) == 3 and abs(float(mr["dice_fold_mean"]) - 0.85) < 1e-9
    assert "boom" in next(r for r in rows if r["column"] == "CT tested DSC")["errors"]


def test_single_column_tables_list_every_case_under_every_method(tmp_path):
    rows = {m: label for label, _, m in TABLES["A"].rows if m in ("unet_ct", "dalace")}
    cells = []
    for method, row in rows.items():
        for fold, cases in ((0, [("a", 0.5, 10.0)]), (1, [("b", 0.7, 20.0), ("c", 0.9, float("nan"))])):
            bump = 0.1 if method == "dalace" else 0.0
            cells.append({"table": "A", "task": "da", "method": method, "row": row, "column": "DSC (std)", "test": "mr", "fold": fold,
                          "cases": [{"case": n, "dice": d + bump, "hd95": h, "asd": 1.0} for n, d, h in cases]})
    text = write_tables(tmp_path, {"cells": cells})
    assert "| a | 0 | 0.500 / 10.0 | 0.600 / 10.0 |" in text
    assert "| c | 1 | 0.900 | 1.000 |" in text  # no HD95 where it is not finite (an empty mask)
    assert "| mean | | **0.700** / 15.0 | **0.800** / 15.0 |" in text
    assert text.index("| a |") < text.index("| b |") < text.index("| c |")
    assert (tmp_path / "tableA_accuracy.md").read_text().count("| mean |") == 1


def test_tiny_sample_dataset_reorients_copies(tmp_path):
    path = tiny_sample_dataset(SAMPLE, tmp_path, copies=3)
    data = json.loads(Path(path).read_text())
    assert [i["id"] for i in data["mr"]] == ["totalseg_mr_sm_0", "totalseg_mr_sm_1", "totalseg_mr_sm_2"]
    codes = [nib.aff2axcodes(nib.load(i["image"]).affine) for i in data["ct"]]
    assert codes == [("R", "A", "S"), ("L", "A", "S"), ("L", "P", "S")]
    # same anatomy: the liver volume is unchanged by reorientation
    vols = [int(np.asarray(nib.load(i["label"]).dataobj).sum()) for i in data["ct"]]
    assert len(set(vols)) == 1
    assert len({i["domain"] for i in data["mr"]}) == 2


def test_foreground_normalization_config_changes_training_and_inference_alike():
    """experiments/configs/foreground_norm.yaml overrides the one id both chains name their MR
    normalization by, so a model trained with it is also segmented with it."""
    from monai.bundle import ConfigParser

    from custom.transforms import ForegroundStandardized

    configs = REPO / "bundle" / "configs"
    override = REPO / "experiments" / "configs" / "foreground_norm.yaml"
    for base, chain in (("train.yaml", "preprocessing_mr"), ("inference.yaml", "preprocessing#transforms")):
        parser = ConfigParser()
        parser.read_config([str(configs / base), str(override)])
        parser.update({"bundle_root": str(REPO / "bundle"), "bias_correction": False})
        transforms = parser.get_parsed_content(chain)
        assert [type(t) for t in transforms].count(ForegroundStandardized) == 1, base


def test_mask_errors_measure_written_masks_against_the_labels(tmp_path):
    """Dice, excess and missed liver of masks named as inference.yaml names them, on the label's grid."""
    from custom.data import pseudo_label_path
    from experiments.masks import mask_errors

    datalist = SAMPLE / "datalist.json"
    mr = json.loads(datalist.read_text())["mr"][0]
    label = nib.load(SAMPLE / mr["label"])  # the sample datalist's paths are relative to it
    liver = np.asarray(label.dataobj) > 0
    with pytest.raises(FileNotFoundError, match="no mask"):
        mask_errors(str(tmp_path), str(datalist))
    mask = liver.copy()
    mask[np.nonzero(liver)[0].min() - 1] = True  # one more plane of the volume, beside the liver
    added = (mask & ~liver).sum() / liver.sum()
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), label.affine), pseudo_label_path(str(SAMPLE / mr["image"]), tmp_path))
    (row,) = mask_errors(str(tmp_path), str(datalist))
    assert row["excess"] == pytest.approx(added) and added > 0 and row["missed"] == 0
    assert row["dice"] == pytest.approx(2 * liver.sum() / (mask.sum() + liver.sum()))
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), label.affine @ np.diag([2.0, 1, 1, 1])),
             pseudo_label_path(str(SAMPLE / mr["image"]), tmp_path))
    with pytest.raises(ValueError, match="is not on the grid of its label"):
        mask_errors(str(tmp_path), str(datalist))


def test_mask_errors_tell_far_and_beyond_excess_in_any_orientation(tmp_path):
    """Of the excess, a one-voxel rim (3 mm) is neither far nor beyond; a plane beside the liver is far
    where it leaves it, and beyond in the axial slices without liver: found through the affine, also
    with the superior axis stored first."""
    from custom.data import pseudo_label_path
    from experiments.masks import mask_errors

    mr = json.loads((SAMPLE / "datalist.json").read_text())["mr"][0]
    label = nib.load(SAMPLE / mr["label"])
    assert nib.aff2axcodes(label.affine) == ("L", "P", "S")
    liver = np.asarray(label.dataobj) > 0
    rim = liver.copy()
    rim[1:] |= liver[:-1]
    plane = liver.copy()
    plane[np.nonzero(liver)[0].min() - 1] = True
    slices_without = int((~liver.any(axis=(0, 1))).sum())
    for order in ([0, 1, 2], [2, 0, 1]):  # as stored, and S first
        affine = label.affine[:, order + [3]]
        case = tmp_path / f"order_{order[0]}"
        case.mkdir()
        nib.save(nib.Nifti1Image(liver.transpose(order).astype(np.uint8), affine), case / "liver_label.nii.gz")
        nib.save(nib.Nifti1Image(liver.transpose(order).astype(np.float32), affine), case / "liver_image.nii.gz")
        datalist = case / "datalist.json"
        item = {"image": "liver_image.nii.gz", "label": "liver_label.nii.gz"}
        datalist.write_text(json.dumps({"ct": [item], "mr": [item]}))
        for mask, expected_beyond in ((rim, 0.0), (plane, liver.shape[1] * slices_without / liver.sum())):
            masks = case / "masks"
            masks.mkdir(exist_ok=True)
            nib.save(nib.Nifti1Image(mask.transpose(order).astype(np.uint8), affine), pseudo_label_path(str(case / "liver_image.nii.gz"), masks))
            (row,) = mask_errors(str(masks), str(datalist))
            assert row["excess"] == pytest.approx((mask & ~liver).sum() / liver.sum()) and row["excess"] > 0
            assert row["excess_beyond"] == pytest.approx(expected_beyond)
            if mask is rim:
                assert row["excess_far"] == 0.0
            else:
                assert expected_beyond < row["excess_far"] < row["excess"]


def _written_probabilities(tmp_path: Path, liver: np.ndarray, segmented: np.ndarray, affine: np.ndarray) -> tuple[Path, Path]:
    """A one-case datalist (the liver as image and label, fold 0) and a folder holding the case's
    probabilities as ``--save_probabilities True`` writes them: 1 on ``segmented``."""
    from custom.data import pseudo_label_path

    nib.save(nib.Nifti1Image(liver.astype(np.uint8), affine), tmp_path / "case_label.nii.gz")
    nib.save(nib.Nifti1Image(liver.astype(np.float32), affine), tmp_path / "case_image.nii.gz")
    datalist = tmp_path / "datalist.json"
    item = {"image": "case_image.nii.gz", "label": "case_label.nii.gz", "fold": 0}
    datalist.write_text(json.dumps({"ct": [item], "mr": [item]}))
    probs = tmp_path / "probs"
    probs.mkdir()
    prob = np.stack([~segmented, segmented], -1).astype(np.float32)
    nib.save(nib.Nifti1Image(prob, affine), pseudo_label_path(str(tmp_path / "case_image.nii.gz"), probs)[: -len("_seg.nii.gz")] + "_prob.nii.gz")
    return datalist, probs


def test_bridge_radius_sweep_scores_written_probabilities(tmp_path):
    """inference.yaml's last steps on a probability file: a blob joined to the liver by a thin bar is
    kept by the largest component alone (radius 0) and cut at 8 mm, which scores higher and is chosen;
    a member lacking the case's file is no match."""
    from experiments.masks import bridge_radius_sweep

    spacing = np.array([1.5, 1.5, 4.0])
    grid = np.indices((80, 48, 16)).transpose(1, 2, 3, 0) * spacing
    liver = ((grid - [30, 36, 32]) ** 2).sum(-1) <= 20**2
    blob = ((grid - [90, 36, 32]) ** 2).sum(-1) <= 15**2
    bar = (np.abs(grid[..., 1] - 36) <= 1) & (np.abs(grid[..., 2] - 32) <= 2) & (grid[..., 0] > 30) & (grid[..., 0] < 90)
    datalist, probs = _written_probabilities(tmp_path, liver, liver | blob | bar, np.diag([*spacing, 1.0]))
    with pytest.raises(FileNotFoundError, match="_prob.nii.gz in every one"):
        bridge_radius_sweep([str(probs), str(tmp_path / "none")], str(datalist), [0, 8])
    out = bridge_radius_sweep([[str(tmp_path / "none"), str(probs)]], str(datalist), [0, 8])
    (case,) = out["cases"]
    assert case["dice"][0.0] == pytest.approx(2 * liver.sum() / ((liver | blob | bar).sum() + liver.sum()), rel=1e-6)
    assert case["dice"][8.0] > case["dice"][0.0] + 0.1 and case["dice"][8.0] > 0.99
    assert out["chosen"] == {0: 8.0} and out["nested"] == case["dice"][8.0]



def test_slice_continuity_sweep_scores_written_probabilities(tmp_path):
    """inference.yaml's last steps on a probability file: the bowel chain drifting below the liver's tip is
    kept by the largest component, dropped by slice continuity (the liver whole), unless
    the guard allows less to go than the chain is."""
    from experiments.masks import slice_continuity_sweep

    liver, bowel = liver_and_drifting_bowel(7.5)
    datalist, probs = _written_probabilities(tmp_path, liver, liver | bowel, np.diag([2.0, 2.0, 7.5, 1.0]))
    out = slice_continuity_sweep([str(probs)], str(datalist), [0, 0.6], radius_mm=0, distance_mm=7.5, max_removed=0.33)
    (case,) = out["cases"]
    assert case["dice"][0.0] == pytest.approx(2 * liver.sum() / ((liver | bowel).sum() + liver.sum()), rel=1e-6)
    assert case["dice"][0.6] == 1.0 and out["chosen"] == {0: 0.6}
    guarded = slice_continuity_sweep([str(probs)], str(datalist), [0, 0.6], 0, 7.5, max_removed=0.5 * bowel.sum() / (liver | bowel).sum())
    assert guarded["cases"][0]["dice"][0.6] == case["dice"][0.0]

# ------------------------------------------------------------------------------------- slow
TINY = dict(folds=2, epochs=1, epoch_length=1, batch_size=2, width=4, num_res_blocks=1, spacing=6.0, slice_size=64, ct_split=False)


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    datalist = tiny_sample_dataset(SAMPLE, root / "data", copies=2)
    settings = Settings(datalist=datalist, output=str(root / "out"), tables="1,3", methods="unet_ct,unet_ct_mr,cyclegan,dalace", **TINY)
    results = Experiment(settings).run()
    return settings, results


@pytest.mark.slow
def test_smallest_protocol_writes_tables_and_run_records(tiny_experiment):
    settings, results = tiny_experiment
    out = Path(settings.output)
    assert not [c for c in results["cells"] if c.get("error")], [c["error"] for c in results["cells"] if c.get("error")]
    table1 = (out / "table1_da.md").read_text()
    assert "| lowerbound (U-Net trained on CT) | " in table1 and "| DALACE | " in table1
    table3 = (out / "table3_joint.md").read_text()
    assert "| Method | CT tested DSC | MR tested DSC |" in table3
    for row in csv.DictReader(open(out / "table1_da.csv")):
        assert int(row["cases"]) == 2 and 0.0 <= float(row["dice_mean"]) <= 1.0  # both MR copies tested once
    joint_ct = [r for r in csv.DictReader(open(out / "table3_joint.csv")) if r["column"] == "CT tested DSC"]
    assert joint_ct and all(int(r["cases"]) == 2 for r in joint_ct)  # CT split in joint learning
    # every run records its configs, overrides and seed; the U-Net on CT (no MR, all CT) is trained once
    runs = results["runs"]
    assert len([r for r in runs if r.startswith("unet_ct-")]) == 3  # DA: once (all CT); joint: per fold (CT split)
    for name, rec in runs.items():
        assert rec["seed"] == 0 and rec["overrides"]["fold"] in (0, 1) and rec["overrides"]["validate#enabled"] is False
        assert rec["configs"][0].endswith("bundle/configs/train.yaml") and rec["configs"][-1].endswith("size.yaml")
        assert rec["command"].startswith("cd bundle && python -m monai.bundle run training --config_file")
    da_unet = {c["run"] for c in results["cells"] if c["task"] == "da" and c["method"] == "unet_ct"}
    assert len(da_unet) == 1  # fold-independent training: reused by both folds
    assert (out / "settings.json").exists() and (out / "size.yaml").exists()


def rerun_table_a(settings: Settings, methods: str) -> tuple[dict, dict]:
    """Table A's ``methods`` on the tiny experiment's output: no cell fails and no finished run is
    trained again (its done.json is untouched). Returns the results and those finished runs."""
    out = Path(settings.output)
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")}
    results = Experiment(Settings(**{**asdict(settings), "tables": "A", "methods": methods})).run()
    assert not [c for c in results["cells"] if c.get("error")], [c["error"] for c in results["cells"] if c.get("error")]
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json") if p in done} == done
    return results, done


@pytest.mark.slow
def test_both_paths_rows_merge_the_runs_two_networks_without_retraining(tiny_experiment):
    """Table A's both-paths rows evaluate the DALACE runs already trained (run_as), MR through the
    merged network of model.pt and model_ct.pt (extra_paths [ct]); training stays on one path."""
    settings, _ = tiny_experiment
    results, done = rerun_table_a(settings, "dalace,dalace_both_paths")
    assert set(Path(settings.output).glob("runs/*/done.json")) == set(done)  # no run trained at all
    cells = {c["method"]: c for c in results["cells"] if c["fold"] == 0}
    assert cells["dalace"]["run"] == cells["dalace_both_paths"]["run"]
    for method, paths in (("dalace", []), ("dalace_both_paths", ["ct"])):
        record = json.loads((Path(settings.output) / cells[method]["eval_dir"] / "eval.json").read_text())
        assert record["overrides"]["extra_paths"] == paths and len(record["cases"]) == 1
    merged = torch.load(Path(settings.output) / "runs" / cells["dalace"]["run"] / "models" / "model_both_paths.pt", weights_only=True)
    assert any(k.startswith("extra_paths.ct.anatomy_encoder.") for k in merged)
    assert results["runs"][cells["dalace"]["run"]]["overrides"]["extra_paths"] == []


@pytest.mark.slow
def test_self_training_rows_train_students_of_the_existing_runs(tiny_experiment):
    """A student starts from its fold's DALACE run (trained once, not again) and learns from that run's
    both-paths masks of the fold's MR training images; the held-out image gets no mask."""
    settings, _ = tiny_experiment
    out = Path(settings.output)
    results, done = rerun_table_a(settings, "dalace,dalace_self_training,dalace_self_training_both_paths")
    for fold in (0, 1):
        cells = {c["method"]: c for c in results["cells"] if c["fold"] == fold}
        run = cells["dalace_self_training"]["run"]
        assert run == cells["dalace_self_training_both_paths"]["run"] and run.startswith("dalace_self_training-")
        o = results["runs"][run]["overrides"]
        teacher = Path(o["teacher_dir"]).parent
        assert teacher.name.startswith("dalace-") and (teacher / "done.json") in done
        assert o["teacher_ckpt_path"].endswith("model_both_paths.pt") and o["teacher_checkpoint"].startswith(str(teacher))
        assert o["max_epochs"] == 1 and o["pair_warmup_epochs"] == 0
        masks = sorted(p.name for p in (out / "runs" / run / "train" / "pseudo_labels").glob("*_seg.nii.gz"))
        held_out = [c["case"] for c in cells["dalace_self_training"]["cases"]]
        assert len(masks) == 1 and len(held_out) == 1 and held_out[0] not in masks[0]


@pytest.mark.slow
def test_self_ensemble_rows_average_each_student_and_its_teacher(tiny_experiment):
    """self_ensemble.yaml's rows evaluate the student runs (trained once, as their rows train them) with
    their teachers: one state_dict whose members are the teacher's and the student's both-paths networks."""
    settings, _ = tiny_experiment
    out = Path(settings.output)
    rows = ("dalace_self_training_both_paths_bridges_tail_cap", "dalace_self_ensemble_bridges_tail_cap")
    results, _ = rerun_table_a(settings, ",".join(rows))
    for fold in (0, 1):
        cells = {c["method"]: c for c in results["cells"] if c["fold"] == fold}
        run = cells[rows[1]]["run"]
        assert run == cells[rows[0]]["run"]
        record = json.loads((out / cells[rows[1]]["eval_dir"] / "eval.json").read_text())
        assert record["configs"][2].endswith("self_ensemble.yaml") and record["overrides"]["extra_paths"] == ["ct"]
        assert record["overrides"]["bridge_radius_mm"] > 0 and len(record["cases"]) == 1
        state = torch.load(record["overrides"]["ckpt_path"], weights_only=True)
        teacher = Path(results["runs"][run]["overrides"]["teacher_dir"])
        for member, models in (("teacher", teacher), ("student", out / "runs" / run / "models")):
            both = torch.load(models / "model_both_paths.pt", weights_only=True)
            assert both and all(torch.equal(v, state[f"members.{member}.{k}"]) for k, v in both.items())
        assert len(state) == 2 * len(both)


@pytest.mark.slow
def test_co_taught_students_take_the_u_net_as_co_teacher(tiny_experiment):
    """The co-taught student's masks come from its fold's DALACE run and the CT-only U-Net run together
    (both reused, not retrained): ensemble.yaml with their merged state_dict writes them."""
    settings, _ = tiny_experiment
    out = Path(settings.output)
    results, done = rerun_table_a(settings, "dalace_co_taught_both_paths")
    cell = next(c for c in results["cells"] if c["fold"] == 0)
    o = results["runs"][cell["run"]]["overrides"]
    teacher = Path(o["teacher_dir"]).parent
    assert (teacher / "done.json") in done and o["pseudo_label_configs"][-1].endswith("ensemble.yaml")
    ckpt = Path(o["teacher_ckpt_path"])
    unet = out / "runs" / ckpt.stem.replace("model_ensemble_", "")
    assert ckpt.parent == teacher / "models" and unet.name.startswith("unet_ct-") and (unet / "done.json") in done
    state = torch.load(ckpt, weights_only=True)
    assert all(torch.equal(v, state[f"members.unet_ct.{k}"]) for k, v in torch.load(unet / "models" / "model.pt", weights_only=True).items())
    record = json.loads((out / "runs" / cell["run"] / "train" / "pseudo_labels" / "teacher.json").read_text())
    assert record["checkpoint"] == str(ckpt.resolve())


@pytest.mark.slow
def test_ensemble_rows_average_the_dalace_run_and_the_u_net(tiny_experiment):
    """ensemble.yaml's rows evaluate the trained runs (none retrained): MR through DALACE's both paths
    and the fold's CT-only U-Net, in one state_dict."""
    settings, _ = tiny_experiment
    out = Path(settings.output)
    results, done = rerun_table_a(settings, "dalace_both_paths,dalace_ensemble")
    assert set(out.glob("runs/*/done.json")) == set(done)  # no run trained at all
    cells = {c["method"]: c for c in results["cells"] if c["fold"] == 0}
    assert cells["dalace_ensemble"]["run"] == cells["dalace_both_paths"]["run"]
    record = json.loads((out / cells["dalace_ensemble"]["eval_dir"] / "eval.json").read_text())
    assert record["configs"][2].endswith("ensemble.yaml") and record["overrides"]["extra_paths"] == ["ct"]
    state = torch.load(record["overrides"]["ckpt_path"], weights_only=True)
    assert any(k.startswith("members.dalace.extra_paths.ct.") for k in state)
    assert any(k.startswith("members.unet_ct.") for k in state) and len(record["cases"]) == 1
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(record["configs"])
    parser.update(record["overrides"])
    network = parser.get_parsed_content("network_def")
    assert list(network.members) == ["dalace", "unet_ct"]
    network.load_state_dict(state, strict=True)


@pytest.mark.slow
def test_context_rows_train_and_test_on_neighbouring_slices(tiny_experiment):
    """The slice_context rows train runs of their own (keyed apart from train.yaml's) whose networks take a
    slice and its two neighbours, and test them with the same input."""
    settings, _ = tiny_experiment
    out = Path(settings.output)
    results, _ = rerun_table_a(settings, "dalace_context_both_paths_bridges_tail_cap")
    cells = [c for c in results["cells"] if c["method"] == "dalace_context_both_paths_bridges_tail_cap"]
    assert len(cells) == 2 and all(c["run"].startswith("dalace_context-") for c in cells)
    for cell in cells:
        assert results["runs"][cell["run"]]["overrides"]["slice_context"] == 1
        record = json.loads((out / cell["eval_dir"] / "eval.json").read_text())
        assert record["overrides"]["slice_context"] == 1 and len(record["cases"]) == 1
        weights = torch.load(out / "runs" / cell["run"] / "models" / "model.pt", weights_only=True)
        assert weights["anatomy_encoder.model.0.conv.weight"].shape[1] == 3


@pytest.mark.slow
def test_bridge_rows_evaluate_the_same_runs_with_the_step(tiny_experiment):
    """The *_bridges rows test the trained runs again (none retrained), with inference.yaml's bridge
    radius reaching its postprocessing; the rows without it keep the largest component alone, and the
    step only ever removes voxels (what it removes: tests/test_transforms.py)."""
    from monai.bundle import ConfigParser

    from custom.transforms import DetachThinBridgesd
    from experiments.protocol import BRIDGE_RADIUS_MM

    settings, _ = tiny_experiment
    out = Path(settings.output)
    results, done = rerun_table_a(settings, "dalace_both_paths,dalace_both_paths_bridges")
    assert set(out.glob("runs/*/done.json")) == set(done)
    cells = {c["method"]: c for c in results["cells"] if c["fold"] == 0}
    plain, cut = (cells[k] for k in ("dalace_both_paths", "dalace_both_paths_bridges"))
    assert plain["run"] == cut["run"] and plain["eval_dir"] != cut["eval_dir"]
    masks = {}
    for cell, radius in ((plain, 0.0), (cut, BRIDGE_RADIUS_MM)):
        record = json.loads((out / cell["eval_dir"] / "eval.json").read_text())
        parser = ConfigParser()
        parser.read_config(record["configs"])
        parser.update(record["overrides"])
        assert parser.get_parsed_content("bridge_radius_mm") == radius
        steps = [t for t in parser.get_parsed_content("postprocessing").transforms if isinstance(t, DetachThinBridgesd)]
        assert [t.detach.radius_mm for t in steps] == ([radius] if radius else [])  # disabled at 0
        (seg,) = (out / cell["eval_dir"]).glob("*_seg.nii.gz")
        masks[radius] = np.asarray(nib.load(seg).dataobj) > 0
    assert not (masks[BRIDGE_RADIUS_MM] & ~masks[0.0]).any()  # (the tiny runs' masks may be empty)



@pytest.mark.slow
def test_continuity_rows_evaluate_the_same_runs_with_the_step(tiny_experiment):
    """The *_continuity rows test the test-time augmentation rows' trainings again (the same runs) with
    inference.yaml's slice continuity reaching its postprocessing; the rows before them run without the
    step, whatever inference.yaml's default, and the step only ever removes voxels."""
    from monai.bundle import ConfigParser

    from custom.transforms import KeepContinuousSlicesd
    from experiments.protocol import SLICE_CONTINUITY

    settings, _ = tiny_experiment
    out = Path(settings.output)
    rows = ("dalace_both_paths_bridges_tail_cap_tta", "dalace_both_paths_bridges_tail_cap_tta_continuity")
    results, _ = rerun_table_a(settings, ",".join(rows))
    cells = {c["method"]: c for c in results["cells"] if c["fold"] == 0}
    before, after = (cells[k] for k in rows)
    assert before["run"] == after["run"] and before["eval_dir"] != after["eval_dir"]
    masks = {}
    for cell, overlap in ((before, 0.0), (after, SLICE_CONTINUITY)):
        record = json.loads((out / cell["eval_dir"] / "eval.json").read_text())
        parser = ConfigParser()
        parser.read_config(record["configs"])
        parser.update(record["overrides"])
        steps = [t for t in parser.get_parsed_content("postprocessing").transforms if isinstance(t, KeepContinuousSlicesd)]
        assert [t.keep.min_overlap for t in steps] == ([overlap] if overlap else [])  # disabled at 0
        (seg,) = (out / cell["eval_dir"]).glob("*_seg.nii.gz")
        masks[overlap] = np.asarray(nib.load(seg).dataobj) > 0
    assert SLICE_CONTINUITY > 0 and not (masks[SLICE_CONTINUITY] & ~masks[0.0]).any()

@pytest.mark.slow
def test_rerun_skips_finished_runs(tiny_experiment):
    settings, _ = tiny_experiment
    out = Path(settings.output)
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")}
    evals = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval-*/eval.json")}
    assert done and evals
    Experiment(settings).run()
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/done.json")} == done
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/eval-*/eval.json")} == evals


@pytest.mark.slow
def test_figures_from_the_smallest_protocol(tiny_experiment):
    from experiments.figures import make_figures

    settings, _ = tiny_experiment
    paths = make_figures(settings.output)
    assert [p.name for p in paths] == ["fig6_predictions.png", "fig7_domain_agnostic.png", "fig8_modality_transfer.png"]
    import matplotlib.image as mpimg

    for p in paths:
        img = mpimg.imread(p)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01
        assert p.stat().st_size < 300_000


def test_liver_intensity_reads_the_bundle_chain_and_its_overrides(tmp_path):
    """The figures behind the normalization account come from the bundle's own MR chain; an override
    config (the foreground normalization) changes them."""
    from experiments.intensity import liver_intensity

    datalist = tiny_sample_dataset(SAMPLE, tmp_path / "data", copies=1)
    fast = tmp_path / "fast.yaml"
    fast.write_text("spacing: [6.0, 6.0, 6.0]\n")
    percentiles = liver_intensity(datalist, configs=(str(fast),), bias_correction=False)
    foreground = liver_intensity(datalist, configs=(str(fast), str(REPO / "experiments" / "configs" / "foreground_norm.yaml")), bias_correction=False)
    assert [r["id"] for r in percentiles] == [r["id"] for r in foreground] and percentiles
    for a, b in zip(percentiles, foreground):
        assert -1 <= a["liver_median"] <= 1 and -1 <= b["liver_median"] <= 1 and a["liver_median"] != b["liver_median"]
        assert a["upper_percentile_over_liver"] == b["upper_percentile_over_liver"] > 1
        assert a["tail_ratio"] == b["tail_ratio"] > 1


@pytest.mark.slow
def test_test_time_probe_scores_every_labelled_mr_of_a_trained_run(tiny_experiment):
    """python -m experiments test_time_augmentation's probe on a trained DALACE run of the tiny
    experiment (both paths merged, the experiment's sizes): one row per labelled MR volume, a Dice in
    [0, 1] per variant; a missing checkpoint is refused by name before any work."""
    from custom.networks import merge_paths
    from experiments.test_time import probe

    settings, results = tiny_experiment
    out = Path(settings.output)
    run = next(c["run"] for c in results["cells"] if c["task"] == "da" and c["method"] == "dalace")
    models = out / "runs" / run / "models"
    load = lambda f: torch.load(models / f, map_location="cpu", weights_only=True)  # noqa: E731
    torch.save(merge_paths(load("model.pt"), {"ct": load("model_ct.pt")}), out / "both_paths.pt")
    rows = probe(str(out / "both_paths.pt"), settings.datalist, configs=(str(out / "size.yaml"),), bias_correction=False)
    labelled = [i for i in json.loads(Path(settings.datalist).read_text())["mr"] if i.get("label")]
    assert [r["id"] for r in rows] == [i["id"] for i in labelled]
    assert all(set(r) == {"id", "plain", "gamma", "zoom", "gamma_zoom"} and all(0 <= r[k] <= 1 for k in r if k != "id") for r in rows)
    with pytest.raises(FileNotFoundError, match="none.pt"):
        probe(str(out / "none.pt"), settings.datalist, configs=(str(out / "size.yaml"),), bias_correction=False)
