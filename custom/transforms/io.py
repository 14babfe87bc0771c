"""Inference results written atomically, so that a full disk or a kill never leaves a partial mask.

MONAI's ``SaveImaged`` writes in place and, when a writer fails, logs "unable to write" and tries the
next one: on a full disk that left a 0-byte ``*_seg.nii.gz`` and a run that exited 0.
"""

from __future__ import annotations

import glob
from pathlib import Path

from monai.data import MetaTensor
from monai.transforms import SaveImaged
from monai.utils import MetaKeys

from custom.utils import atomic_path

__all__ = ["AtomicSaveImaged"]


class AtomicSaveImaged(SaveImaged):
    """MONAI's ``SaveImaged`` (same arguments) writing each file to a temporary name in its folder
    (:func:`custom.utils.atomic_path`) and renaming it when complete. A failed write raises an
    ``OSError`` whose first line names the file and the cause, and leaves no file behind. Being a
    ``SaveImaged``, it is dropped where MONAI Label drops the bundle's savers.

    Only the first writer MONAI finds for the format is used: after one failed, a second may report
    success on the same file with a broken result."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.saver.writers = tuple(self.saver.writers)[:1]

    def __call__(self, data):
        d = dict(data)
        saver = self.saver
        for key, meta_key, meta_key_postfix in self.key_iterator(d, self.meta_keys, self.meta_key_postfix):
            if meta_key is None and meta_key_postfix is not None:
                meta_key = f"{key}_{meta_key_postfix}"
            img = d[key]
            meta = img.meta if isinstance(img, MetaTensor) else d.get(meta_key) if meta_key else None
            path = saver.folder_layout.filename(**saver.fname_formatter(meta, saver))
            try:
                with atomic_path(path, suffix=f".tmp{saver.output_ext}") as tmp:  # the writer picks the format by suffix
                    saver(img, meta, filename=tmp[: -len(saver.output_ext)])
            except Exception as e:
                lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
                cause = lines[-1] if isinstance(e, RuntimeError) and lines else f"{type(e).__name__}: {lines[0] if lines else ''}"
                raise OSError(f"{path}: not written ({cause[:300]}); no partial file was left") from e
            for stale in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.tmp{saver.output_ext}"):
                stale.unlink(missing_ok=True)  # of a run killed while writing this file
            if saver.savepath_in_metadict and meta is not None:
                meta[MetaKeys.SAVED_TO] = path
        return d
