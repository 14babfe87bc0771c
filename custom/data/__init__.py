"""Datalists for DALACE: the JSON format, its validation, k-fold splits and the items a config trains on.

- :func:`datalist_items`: the items of one modality and role (train/val/all/test) for a bundle config
  (:func:`select_items`: the same selection in a datalist already in memory).
- :func:`validate_datalist`: every file exists, reads, is 3D, finite, 0/1 labelled and aligned with its
  image; all problems in one :class:`DatalistError`.
- :func:`pseudo_labelled`: unlabelled MR items labelled by a trained model's masks (self-training).
- :func:`select_inputs`, :func:`list_inputs`: what the user named for inference as a datalist.
- :func:`datalist_from_folder`, :func:`datalist_from_manifest`, :func:`assign_folds`: writing datalists,
  also from the command line (``python -m custom.data``).

The format is described in :mod:`custom.data.datalist`.
"""

from .build import assign_folds, datalist_from_folder, datalist_from_manifest, write_datalist
from .datalist import datalist_items, read_datalist_json, resolve_items, select_items
from .errors import DatalistError
from .inputs import IMAGE_SUFFIXES, case_name, list_inputs, select_inputs
from .pseudo_labels import pseudo_label_path, pseudo_labelled
from .validation import read_image, validate_datalist, validate_items

__all__ = [
    "DatalistError",
    "IMAGE_SUFFIXES",
    "assign_folds",
    "case_name",
    "datalist_from_folder",
    "datalist_from_manifest",
    "datalist_items",
    "list_inputs",
    "pseudo_label_path",
    "pseudo_labelled",
    "read_datalist_json",
    "read_image",
    "resolve_items",
    "select_items",
    "select_inputs",
    "validate_datalist",
    "validate_items",
    "write_datalist",
]
