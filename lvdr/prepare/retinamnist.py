"""RetinaMNIST: MedMNIST's official splits, each fundus image a sequence of length 1 (T = 1)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from lvdr.errors import DataError
from lvdr.fetch import provenance, read_manifest
from lvdr.fetch.retinamnist import check_npz
from lvdr.prepare import to_float16, write_prepared
from lvdr.prepare.geometry import resize

log = logging.getLogger(__name__)
SPLITS = {"train": "train", "val": "val", "test": "test"}


def prepare(cfg: dict, manifest_path: Path, out_dir: Path, seed: int, workers: int = 1):
    import medmnist

    manifest, root = read_manifest(manifest_path)
    check_npz(root / manifest["npz"])
    size = cfg["prepare"]["image_size"]
    parts = []
    for split in SPLITS:
        data = medmnist.RetinaMNIST(split=split, root=str(root), size=manifest["size"], download=False)
        images = np.asarray(data.imgs, dtype=np.float32) / 255.0
        images = images[..., None] if images.ndim == 3 else images
        images = np.moveaxis(images, -1, 1)  # N x C x H x W
        if size:
            images = np.stack([resize(im, size) for im in images])
        grades = np.asarray(data.labels).reshape(-1).astype(int)
        if grades.min() < 0 or grades.max() > 4:
            raise DataError(f"{root / manifest['npz']}: {split}_labels outside 0..4")
        ids = [f"{split}{i:05d}" for i in range(len(grades))]
        table = pd.DataFrame({
            "case_id": ids, "seq_id": ids, "slice_pos": 0, "n_slices": 1, "split": split, "grade": grades,
            "label_bin": (grades > 0).astype(int), "source_file": manifest["npz"], "source_slice": np.arange(len(grades)),
            "evidence": np.nan,
        })
        parts.append((to_float16(images), table))
    meta = {"data": provenance(manifest, root), "evidence": None, "num_classes": 5, "task": "ordinal", "skipped": []}
    return write_prepared(out_dir, "retinamnist", parts, meta)
