"""The paper's protocol (sections 4 and 6): tasks, methods and the four tables, as bundle config lists.

A method is a list of config files composed after ``train.yaml`` (``bundle/configs`` unless prefixed
``experiments/``), the data streams its training reads (for reusing a trained model wherever the
same training data recur), and how its MR (and, for joint learning, CT) test is segmented.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from tools.paths import BUNDLE, BUNDLE_CONFIGS, REPO  # noqa: F401 (the experiments read them from here)

EXPERIMENT_CONFIGS = Path(__file__).resolve().parent / "configs"

TASKS = ("da", "dal", "joint")

#: a student's training (self-training), as a fraction of the epochs its teacher trained for
STUDENT_EPOCH_FRACTION = 0.2


def _inference_default(key: str, **overrides):
    """An ``inference.yaml`` default, evaluated (with ``overrides``) where it is an expression, e.g. of ``modality``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(ConfigParser.load_config_file(str(BUNDLE_CONFIGS / "inference.yaml")))
    parser.update(overrides)
    return parser.get_parsed_content(key)


#: the bundle's bridge radius (``inference.yaml``), for the Table A rows that evaluate with it
BRIDGE_RADIUS_MM = float(_inference_default("bridge_radius_mm"))
#: how far apart inference.yaml compares slices for its slice continuity step (``slice_continuity_mm``)
SLICE_CONTINUITY_MM = float(_inference_default("slice_continuity_mm"))
#: ... and the fraction of a slice's piece that must overlap the mask nearer the liver's largest slice (MR's)
SLICE_CONTINUITY = float(_inference_default("slice_continuity", modality="mr"))
#: ... and the largest fraction of a mask it may remove (more: the mask is left whole)
SLICE_CONTINUITY_MAX_REMOVED = float(_inference_default("slice_continuity_max_removed"))
#: the bundle's cap on the MR normalization's upper bound (``mr_tail_cap``), for the rows trained and tested with it
MR_TAIL_CAP = float(_inference_default("mr_tail_cap"))


@dataclass(frozen=True)
class Method:
    """One trained model of a task.

    configs: files after ``train.yaml`` (names in ``bundle/configs``, or ``experiments/<name>``).
    uses: training data the method reads: ``ct`` (labelled CT), ``mr`` (unlabelled MR images),
        ``mr_labels`` (labelled MR). Two runs with the same configs, settings and these items are one run.
    mr_eval: ``dalace`` (inference.yaml; a DomainAgnosticSegmenter checkpoint), ``both_paths`` (the
        same with CT's path added: the run's model.pt and model_ct.pt merged), ``ensemble`` (both paths
        and the ``ensemble_with`` run's U-Net, probabilities averaged: ensemble.yaml), ``self_ensemble``
        (a student's both paths and its teacher's, probabilities averaged: self_ensemble.yaml) or ``unet``
        (inference.yaml + inference_unet.yaml; a plain U-Net).
    ct_eval: for joint learning's CT test: ``dalace`` (the run's model_ct.pt), ``unet`` (model.pt on CT),
        ``cyclegan_ct`` (CT -> MR translator then S, exported from the checkpoint), ``tdgan_ct`` (S on CT).
    weights: ``final`` (models/model.pt: the weight average when the run keeps one) or ``raw`` (the
        last raw weights, train/model_raw.pt).
    run_as: the key of the method whose training this one evaluates (another view of the same run).
    teacher: the key of the method whose run of the same fold teaches this one (self-training): the
        runner trains it first, and this run starts from its weights and learns from its masks of the
        fold's MR training images, for ``STUDENT_EPOCH_FRACTION`` of the size's epochs.
    co_teacher: the key of a method (a plain U-Net) whose run of the same fold joins the teacher: the
        masks are written by both together (``ensemble.yaml``: their probabilities averaged).
    ensemble_with: for ``mr_eval="ensemble"``, the key of the method (a plain U-Net) whose run of the
        same fold joins this one at inference.
    bridge_radius_mm: ``inference.yaml``'s last postprocessing step for the MR test (0: off, the
        largest component alone, as every table before the step was written; see
        :data:`BRIDGE_RADIUS_MM`).
    pseudo_label_bridge_radius_mm: the same step for a student's masks (``self_training.yaml``'s
        ``pseudo_label_bridge_radius_mm``; 0: uncut, as the students before the step learned from).
    mr_tail_cap: ``mr_tail_cap`` of the MR normalization, in training and in the MR test alike (0:
        percentiles alone, as every table before the cap was written; see :data:`MR_TAIL_CAP`).
    test_time_augmentation: ``inference.yaml``'s ``test_time_augmentation`` for the MR test (its
        probabilities averaged over gammas and in-plane zooms; the training is unchanged).
    pseudo_label_test_time_augmentation: the same for a student's masks (``self_training.yaml``'s
        ``pseudo_label_test_time_augmentation``).
    slice_context: ``slice_context`` (neighbouring slices each side as input channels), in training and
        test alike (0: one slice, as every table before it was written).
    slice_continuity: ``inference.yaml``'s step after the bridges for the MR test, dropping what drifts
        out of the liver from slice to slice (0: off, as every table before it was written; see
        :data:`SLICE_CONTINUITY`).
    """

    key: str
    configs: tuple[str, ...]
    uses: tuple[str, ...]
    mr_eval: str = "dalace"
    ct_eval: str | None = None
    weights: str = "final"
    run_as: str | None = None
    teacher: str | None = None
    co_teacher: str | None = None
    ensemble_with: str | None = None
    bridge_radius_mm: float = 0.0
    pseudo_label_bridge_radius_mm: float = 0.0
    mr_tail_cap: float = 0.0
    test_time_augmentation: bool = False
    pseudo_label_test_time_augmentation: bool = False
    slice_context: int = 0
    slice_continuity: float = 0.0

    def config_files(self) -> list[str]:
        files = [str(BUNDLE_CONFIGS / "train.yaml")]
        for c in self.configs:
            if c.startswith("experiments/"):
                files.append(str(EXPERIMENT_CONFIGS / c.split("/", 1)[1]))
            else:
                files.append(str(BUNDLE_CONFIGS / c))
        return files


_DA = {
    "unet_ct": Method("unet_ct", ("unet_ct.yaml",), ("ct",), "unet", "unet"),
    "unet_mr": Method("unet_mr", ("unet_ct.yaml", "unet_mr.yaml"), ("mr_labels",), "unet", "unet"),
    "cyclegan": Method("cyclegan", ("cyclegan.yaml",), ("ct", "mr"), "unet"),
    "tdgan": Method("tdgan", ("cyclegan.yaml", "tdgan.yaml"), ("ct", "mr"), "dalace"),
    "dadr": Method("dadr", ("dadr.yaml",), ("ct", "mr"), "dalace"),
    "no_dam": Method("no_dam", ("no_dam.yaml",), ("ct", "mr"), "dalace"),
    "dalace": Method("dalace", (), ("ct", "mr"), "dalace"),
    # the accuracy table (A): the appearance augmentation off, and the raw weights beside their average
    "unet_ct_plain": Method("unet_ct_plain", ("unet_ct.yaml", "experiments/no_appearance.yaml"), ("ct",), "unet", "unet"),
    "dalace_plain": Method("dalace_plain", ("experiments/no_appearance.yaml",), ("ct", "mr"), "dalace"),
    "dalace_raw": Method("dalace_raw", (), ("ct", "mr"), "dalace", weights="raw", run_as="dalace"),
    "dalace_mr_path": Method("dalace_mr_path", ("experiments/mr_path_supervision.yaml",), ("ct", "mr"), "dalace"),
    # ... and the same trainings segmenting MR through both anatomy encoders (extra_paths)
    "dalace_both_paths": Method("dalace_both_paths", (), ("ct", "mr"), "both_paths", run_as="dalace"),
    "dalace_mr_path_both_paths": Method(
        "dalace_mr_path_both_paths", ("experiments/mr_path_supervision.yaml",), ("ct", "mr"), "both_paths", run_as="dalace_mr_path"
    ),
    # ... and self-training from train.yaml's run: its both-paths masks of the MR training images as labels
    "dalace_self_training": Method("dalace_self_training", ("self_training.yaml",), ("ct", "mr"), "dalace", teacher="dalace"),
    "dalace_self_training_both_paths": Method(
        "dalace_self_training_both_paths", ("self_training.yaml",), ("ct", "mr"), "both_paths", run_as="dalace_self_training", teacher="dalace"
    ),
    # ... and those trainings segmenting MR together with the CT-only U-Net (ensemble.yaml)
    "dalace_ensemble": Method("dalace_ensemble", (), ("ct", "mr"), "ensemble", run_as="dalace", ensemble_with="unet_ct"),
    "dalace_self_training_ensemble": Method(
        "dalace_self_training_ensemble", ("self_training.yaml",), ("ct", "mr"), "ensemble", run_as="dalace_self_training",
        teacher="dalace", ensemble_with="unet_ct",
    ),
    # ... and with the CT-only U-Net as co-teacher: the masks from both models' averaged probabilities
    "dalace_co_taught": Method(
        "dalace_co_taught", ("self_training.yaml",), ("ct", "mr"), "dalace", teacher="dalace", co_teacher="unet_ct"
    ),
    "dalace_co_taught_both_paths": Method(
        "dalace_co_taught_both_paths", ("self_training.yaml",), ("ct", "mr"), "both_paths", run_as="dalace_co_taught",
        teacher="dalace", co_teacher="unet_ct",
    ),
}


def _bridged(m: Method) -> Method:
    """The same training's MR test with the bundle's bridge detachment after the largest component."""
    return replace(m, key=f"{m.key}_bridges", run_as=m.run_as or m.key, bridge_radius_mm=BRIDGE_RADIUS_MM)


# ... and the MR tests of those trainings with thin bridges cut (inference.yaml's bridge_radius_mm)
_DA.update({f"{k}_bridges": _bridged(_DA[k]) for k in (
    "unet_ct", "dalace_both_paths", "dalace_self_training_both_paths", "dalace_ensemble", "dalace_self_training_ensemble")})
# ... and self-training on the teacher's masks with thin bridges cut, tested with them cut too
_CUT = {"pseudo_label_bridge_radius_mm": BRIDGE_RADIUS_MM, "teacher": "dalace"}
_DA.update({
    "dalace_self_training_cut": Method("dalace_self_training_cut", ("self_training.yaml",), ("ct", "mr"), "dalace", **_CUT),
    "dalace_self_training_cut_both_paths_bridges": Method(
        "dalace_self_training_cut_both_paths_bridges", ("self_training.yaml",), ("ct", "mr"), "both_paths",
        run_as="dalace_self_training_cut", bridge_radius_mm=BRIDGE_RADIUS_MM, **_CUT),
    "dalace_self_training_cut_ensemble_bridges": Method(
        "dalace_self_training_cut_ensemble_bridges", ("self_training.yaml",), ("ct", "mr"), "ensemble",
        run_as="dalace_self_training_cut", ensemble_with="unet_ct", bridge_radius_mm=BRIDGE_RADIUS_MM, **_CUT),
})




# ... and each student segmenting MR together with its teacher, both through both paths (self_ensemble.yaml)
_DA["dalace_self_ensemble_bridges"] = Method(
    "dalace_self_ensemble_bridges", ("self_training.yaml",), ("ct", "mr"), "self_ensemble", run_as="dalace_self_training",
    teacher="dalace", bridge_radius_mm=BRIDGE_RADIUS_MM)


def _tail_capped(m: Method) -> Method:
    """The same method trained and tested with the bundle's cap on the MR normalization's upper bound
    (a student's teacher too)."""
    teacher = f"{m.teacher}_tail_cap" if m.teacher else None
    return replace(m, key=f"{m.key}_tail_cap", run_as=m.run_as or m.key, mr_tail_cap=MR_TAIL_CAP, teacher=teacher)


# ... and those with thin bridges cut (the bundle's inference) whose MR is normalized with the tail cap
_DA.update({f"{k}_tail_cap": _tail_capped(_DA[k]) for k in (
    "dalace", "unet_ct_bridges", "dalace_both_paths_bridges", "dalace_ensemble_bridges",
    "dalace_self_training_both_paths_bridges", "dalace_self_training_ensemble_bridges", "dalace_self_ensemble_bridges")})


# ... and the bundle's inference of those with test-time augmentation (the same trainings)
_DA.update({f"{k}_tta": replace(_DA[k], key=f"{k}_tta", run_as=_DA[k].run_as or k, test_time_augmentation=True)
            for k in ("dalace_both_paths_bridges_tail_cap", "dalace_self_ensemble_bridges_tail_cap")})


# ... and self-training on the teacher's masks with test-time augmentation, segmenting MR with its teacher
# (both tested with it)
_TTA_MASKS = dict(run_as="dalace_tta_self_training", pseudo_label_test_time_augmentation=True, test_time_augmentation=True)
_DA.update({new: replace(_DA[old], key=new, **_TTA_MASKS) for new, old in (
    ("dalace_tta_self_training_both_paths_bridges_tail_cap", "dalace_self_training_both_paths_bridges_tail_cap"),
    ("dalace_tta_self_ensemble_bridges_tail_cap", "dalace_self_ensemble_bridges_tail_cap"))})


# ... and DALACE trained with the consistency of MR's segmentation under appearance changes (train.yaml's
# mr_consistency), tested as the two rows above it: both paths, thin bridges cut, capped, without and with
# test-time augmentation
_DA["dalace_consistency"] = Method(
    "dalace_consistency", ("experiments/mr_consistency.yaml",), ("ct", "mr"), "dalace", mr_tail_cap=MR_TAIL_CAP)
_DA.update({f"dalace_consistency_{k[len('dalace_'):]}": replace(
    _DA[k], key=f"dalace_consistency_{k[len('dalace_'):]}", configs=("experiments/mr_consistency.yaml",), run_as="dalace_consistency")
    for k in ("dalace_both_paths_bridges_tail_cap", "dalace_both_paths_bridges_tail_cap_tta")})


# ... and DALACE with through-plane context (train.yaml's slice_context: each slice with one neighbour above and
# one below as input channels), trained and tested so, as the two rows above it
_DA.update({f"dalace_context_{k[len('dalace_'):]}": replace(
    _DA[k], key=f"dalace_context_{k[len('dalace_'):]}", run_as="dalace_context", slice_context=1)
    for k in ("dalace_both_paths_bridges_tail_cap", "dalace_both_paths_bridges_tail_cap_tta")})


# ... and the bundle's inference of the trainings of the test-time augmentation rows (train.yaml's recipe, and
# with the consistency term), then dropping what drifts out of the liver from slice to slice (slice_continuity)
_DA.update({f"{k}_continuity": replace(_DA[k], key=f"{k}_continuity", run_as=_DA[k].run_as or k, slice_continuity=SLICE_CONTINUITY)
            for k in ("dalace_both_paths_bridges_tail_cap_tta", "dalace_consistency_both_paths_bridges_tail_cap_tta")})


def _with(first: str, m: Method) -> Method:
    return replace(m, configs=(first, *m.configs))


METHODS: dict[str, dict[str, Method]] = {
    "da": dict(_DA),
    # DAL: the same methods on a datalist whose MR mixes domains (dal.yaml only renames the run);
    # the bounds do not change with the task: only their data do.
    "dal": {k: (m if k.startswith("unet") else _with("dal.yaml", m)) for k, m in _DA.items()},
    "joint": {
        "unet_ct": _DA["unet_ct"],
        "unet_mr": _DA["unet_mr"],
        "unet_ct_mr": Method(
            "unet_ct_mr", ("unet_ct.yaml", "unet_mr.yaml", "experiments/unet_ct_mr.yaml"), ("ct", "mr_labels"), "unet", "unet"
        ),
        "cyclegan": Method("cyclegan", ("joint.yaml", "cyclegan.yaml"), ("ct", "mr_labels"), "unet", "cyclegan_ct"),
        "tdgan": Method("tdgan", ("joint.yaml", "cyclegan.yaml", "tdgan.yaml"), ("ct", "mr_labels"), "dalace", "tdgan_ct"),
        "dadr": Method("dadr", ("joint.yaml", "dadr.yaml"), ("ct", "mr_labels"), "dalace", "dalace"),
        "dalace": Method("dalace", ("joint.yaml",), ("ct", "mr_labels"), "dalace", "dalace"),
    },
}


@dataclass(frozen=True)
class Table:
    """Rows (label, task, method) and columns (label, task-of-row override or None, test modality)."""

    key: str
    title: str
    rows: tuple[tuple[str, str | None, str], ...]  # (row label, task or None for per-column task, method)
    columns: tuple[tuple[str, str | None, str], ...]  # (column label, task or None, test modality)
    note: str = ""
    needs: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        # rows and columns are looked up by label when the tables are written: two alike would show
        # one's figures under the other's name
        for what, labels in (("row", [r[0] for r in self.rows]), ("column", [c[0] for c in self.columns])):
            repeated = sorted({x for x in labels if labels.count(x) > 1})
            if repeated:
                raise ValueError(f"table {self.key}: two {what}s are labelled {repeated}")


TABLES: dict[str, Table] = {
    "1": Table(
        "1",
        "Table 1. DA task: labelled CT -> one unlabelled MR domain",
        (
            ("lowerbound (U-Net trained on CT)", "da", "unet_ct"),
            ("upperbound (U-Net trained on MR)", "da", "unet_mr"),
            ("CycleGAN", "da", "cyclegan"),
            ("TD-GAN", "da", "tdgan"),
            ("DADR", "da", "dadr"),
            ("DALACE", "da", "dalace"),
        ),
        (("DSC (std)", None, "mr"),),
    ),
    "2": Table(
        "2",
        "Table 2. DAL task: labelled CT -> unlabelled MR of mixed domains",
        (
            ("lowerbound (U-Net trained on CT)", "dal", "unet_ct"),
            ("upperbound (U-Net trained on MR)", "dal", "unet_mr"),
            ("CycleGAN", "dal", "cyclegan"),
            ("TD-GAN", "dal", "tdgan"),
            ("DADR", "dal", "dadr"),
            ("DALACE", "dal", "dalace"),
        ),
        (("DSC (std)", None, "mr"),),
    ),
    "3": Table(
        "3",
        "Table 3. Joint learning: labelled CT and labelled MR",
        (
            ("CT trained U-Net", "joint", "unet_ct"),
            ("MR trained U-Net", "joint", "unet_mr"),
            ("CT&MR trained U-Net", "joint", "unet_ct_mr"),
            ("Joint CT&MR CycleGAN", "joint", "cyclegan"),
            ("Joint CT&MR TD-GAN", "joint", "tdgan"),
            ("Joint CT&MR DADR", "joint", "dadr"),
            ("Joint CT&MR DALACE", "joint", "dalace"),
        ),
        (("CT tested DSC", None, "ct"), ("MR tested DSC", None, "mr")),
    ),
    "A": Table(
        "A",
        "Table A. Accuracy on the DA task: appearance augmentation, weight averaging, MR path supervision, "
        "both paths at inference, self-training, ensembles with the CT-only U-Net (beyond the paper)",
        (
            ("CT-only U-Net, no appearance augmentation", "da", "unet_ct_plain"),
            ("CT-only U-Net, appearance augmentation", "da", "unet_ct"),
            ("DALACE, no appearance augmentation (averaged weights)", "da", "dalace_plain"),
            ("DALACE, appearance augmentation, raw last weights", "da", "dalace_raw"),
            ("DALACE, appearance augmentation, averaged weights", "da", "dalace"),
            ("DALACE, as above, MR also through CT's path (train.yaml)", "da", "dalace_both_paths"),
            ("DALACE, averaged weights, CT labels also on MR's path", "da", "dalace_mr_path"),
            ("DALACE, as above, MR also through CT's path (shipped recipe)", "da", "dalace_mr_path_both_paths"),
            ("DALACE, self-trained on train.yaml's both-paths masks of the MR training images", "da", "dalace_self_training"),
            ("DALACE, as above, MR also through CT's path", "da", "dalace_self_training_both_paths"),
            ("DALACE, self-trained on the masks of train.yaml's run (both paths) and the CT-only U-Net averaged", "da", "dalace_co_taught"),
            ("DALACE, self-trained as above (U-Net co-teacher), MR also through CT's path", "da", "dalace_co_taught_both_paths"),
            ("DALACE (train.yaml, both paths) and the CT-only U-Net, probabilities averaged (ensemble.yaml)", "da", "dalace_ensemble"),
            ("DALACE self-trained (both paths) and the CT-only U-Net, probabilities averaged", "da", "dalace_self_training_ensemble"),
            ("CT-only U-Net, appearance augmentation, thin bridges cut (inference.yaml)", "da", "unet_ct_bridges"),
            ("DALACE (train.yaml, both paths), thin bridges cut (inference.yaml)", "da", "dalace_both_paths_bridges"),
            ("DALACE self-trained, both paths, thin bridges cut", "da", "dalace_self_training_both_paths_bridges"),
            ("DALACE (train.yaml) and the CT-only U-Net (ensemble.yaml), thin bridges cut", "da", "dalace_ensemble_bridges"),
            ("DALACE self-trained and the CT-only U-Net, thin bridges cut", "da", "dalace_self_training_ensemble_bridges"),
            ("DALACE self-trained on masks with thin bridges cut, MR's path alone", "da", "dalace_self_training_cut"),
            ("DALACE self-trained on masks with thin bridges cut, both paths, thin bridges cut", "da", "dalace_self_training_cut_both_paths_bridges"),
            ("DALACE self-trained on cut masks and the CT-only U-Net, thin bridges cut", "da", "dalace_self_training_cut_ensemble_bridges"),
            ("CT-only U-Net, thin bridges cut, MR's upper percentile capped (inference.yaml)", "da", "unet_ct_bridges_tail_cap"),
            ("DALACE (train.yaml: MR's upper percentile capped), both paths, thin bridges cut", "da", "dalace_both_paths_bridges_tail_cap"),
            ("DALACE (train.yaml, capped) and the CT-only U-Net (ensemble.yaml), thin bridges cut", "da", "dalace_ensemble_bridges_tail_cap"),
            ("DALACE self-trained (capped), both paths, thin bridges cut", "da", "dalace_self_training_both_paths_bridges_tail_cap"),
            ("DALACE self-trained (capped) and the CT-only U-Net, thin bridges cut", "da", "dalace_self_training_ensemble_bridges_tail_cap"),
            ("DALACE (capped) and its self-trained student, both DALACE (self_ensemble.yaml), thin bridges cut", "da",
             "dalace_self_ensemble_bridges_tail_cap"),
            ("DALACE (capped), both paths, thin bridges cut, test-time augmentation (inference.yaml)", "da",
             "dalace_both_paths_bridges_tail_cap_tta"),
            ("DALACE (capped) and its self-trained student (self_ensemble.yaml), test-time augmentation", "da",
             "dalace_self_ensemble_bridges_tail_cap_tta"),
            ("DALACE (capped) self-trained on its masks with test-time augmentation, both paths, tested with it", "da",
             "dalace_tta_self_training_both_paths_bridges_tail_cap"),
            ("DALACE (capped) and that student (self_ensemble.yaml), test-time augmentation", "da",
             "dalace_tta_self_ensemble_bridges_tail_cap"),
            ("DALACE (capped) trained with MR's consistency under appearance changes, both paths, thin bridges cut", "da",
             "dalace_consistency_both_paths_bridges_tail_cap"),
            ("DALACE (capped) trained with MR's consistency, as above, test-time augmentation", "da",
             "dalace_consistency_both_paths_bridges_tail_cap_tta"),
            ("DALACE (capped) with neighbouring slices as channels (slice_context 1), both paths, thin bridges cut", "da",
             "dalace_context_both_paths_bridges_tail_cap"),
            ("DALACE (capped) with neighbouring slices as channels, as above, test-time augmentation", "da",
             "dalace_context_both_paths_bridges_tail_cap_tta"),
            ("DALACE (capped), both paths, thin bridges cut, test-time augmentation, slice continuity (inference.yaml)", "da",
             "dalace_both_paths_bridges_tail_cap_tta_continuity"),
            ("DALACE (capped) trained with MR's consistency, test-time augmentation, slice continuity", "da",
             "dalace_consistency_both_paths_bridges_tail_cap_tta_continuity"),
            ("MR-supervised U-Net (upper bound)", "da", "unet_mr"),
        ),
        (("DSC (std)", None, "mr"),),
    ),
    "4": Table(
        "4",
        "Table 4. Ablation: Anatomy Preserving Module (APM) and Domain Agnostic Module (DAM)",
        (
            ("DAM only, no APM (DADR)", None, "dadr"),
            ("APM only, no DAM", None, "no_dam"),
            ("APM + DAM (DALACE)", None, "dalace"),
        ),
        (("DSC for DA", "da", "mr"), ("DSC for DAL", "dal", "mr")),
    ),
}


def table_cells(table: Table) -> list[tuple[str, str, str, str, str]]:
    """(row label, column label, task, method, test modality) of every cell."""
    cells = []
    for row_label, row_task, method in table.rows:
        for col_label, col_task, test in table.columns:
            cells.append((row_label, col_label, row_task or col_task, method, test))
    return cells
