"""Command line for datalists: ``python -m custom.data <command> --help``.

Commands::

    python -m custom.data from_folder bundle/sample_data --output bundle/sample_data/datalist.json
    python -m custom.data from_manifest ../shared/data/manifest.json --output datalist.json \\
        --mr_sequences T2-SPIR --mr_labels True --exclude totalseg_ct_sm,totalseg_mr_sm
    python -m custom.data folds datalist.json --num_folds 5 --seed 0     # rewrite folds in place
    python -m custom.data validate datalist.json [--dataset_dir DIR]

Datalists built from the manifest have paths relative to the manifest's folder: pass that folder as
``dataset_dir`` when the datalist is written elsewhere.
"""

from __future__ import annotations

import fire

from .build import assign_folds, datalist_from_folder, datalist_from_manifest, write_datalist
from .datalist import MODALITIES, read_datalist_json
from .validation import validate_datalist


def from_folder(folder: str, output: str, num_folds: int = 5, seed: int = 0, mr_labels: bool = True, mr_domain: str = ""):
    """Write a datalist for ``folder`` (``ct/<id>_image.*``, ``ct/<id>_label.*``, ``mr/...``)."""
    return write_datalist(datalist_from_folder(folder, num_folds, seed, mr_labels, mr_domain), output)


def from_manifest(
    manifest: str,
    output: str,
    mr_sequences=None,
    mr_labels: bool = True,
    exclude=None,
    use_dicom: bool = False,
    num_folds: int = 5,
    seed: int = 0,
):
    """Write a datalist for the shared data's ``manifest.json``."""
    data = datalist_from_manifest(manifest, mr_sequences, mr_labels, exclude, use_dicom, num_folds, seed)
    return write_datalist(data, output)


def folds(datalist: str, num_folds: int = 5, seed: int = 0, output: str | None = None):
    """(Re)assign reproducible k-fold splits per modality; writes ``output`` (default: in place)."""
    data = read_datalist_json(datalist)
    for key in MODALITIES:
        if data.get(key):
            data[key] = assign_folds(data[key], num_folds, seed)
    data.update(num_folds=num_folds, seed=seed)
    return write_datalist(data, output or datalist)


def validate(datalist: str, dataset_dir: str | None = None, allow_2d: bool = False):
    """Check the datalist and all its files; prints a summary or exits with every problem listed."""
    data = validate_datalist(datalist, dataset_dir, allow_2d=allow_2d)
    counts = {k: len(v) for k, v in data.items() if isinstance(v, list)}
    return f"{datalist}: OK {counts}"


if __name__ == "__main__":
    fire.Fire({"from_folder": from_folder, "from_manifest": from_manifest, "folds": folds, "validate": validate})
