"""Read a prepared dataset (the slice array, the slice table and its metadata)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lvdr.errors import DataError
from lvdr.files import read_json


@dataclass
class Prepared:
    slices: np.ndarray  # N x C x H x W float16 in [0, 1], memory-mapped
    table: pd.DataFrame  # one row per slice, row-aligned with ``slices``
    meta: dict
    masks: np.ndarray | None = None  # N x H x W uint8: the graded region (disc, edema), where a segmentation gives it

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    def rows(self, split: str) -> np.ndarray:
        return self.table.row[self.table.split == split].to_numpy()


def load_prepared(folder: str | Path) -> Prepared:
    folder = Path(folder)
    missing = [n for n in ("slices.npy", "slices.parquet", "prepare.json") if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder}: not a prepared dataset, missing {', '.join(missing)} (run `lvdr prepare` first)")
    slices = np.load(folder / "slices.npy", mmap_mode="r")
    table = pd.read_parquet(folder / "slices.parquet")
    if len(table) != len(slices):
        raise DataError(f"{folder}: slices.parquet has {len(table)} rows but slices.npy {len(slices)}")
    masks = np.load(folder / "masks.npy", mmap_mode="r") if (folder / "masks.npy").is_file() else None
    if masks is not None and len(masks) != len(slices):
        raise DataError(f"{folder}: masks.npy has {len(masks)} rows but slices.npy {len(slices)}")
    return Prepared(slices, table, read_json(folder / "prepare.json"), masks)


def load_latents(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The latent cache's z (n, d_z) and patch tokens (n, K, c), memory-mapped (``lvdr.diffae.cache`` writes
    it); here, beside the slices, so that stages that only read it need not import torch and MONAI."""
    folder = Path(folder)
    return np.load(folder / "z.npy", mmap_mode="r"), np.load(folder / "tokens.npy", mmap_mode="r")


def to_model_range(batch: np.ndarray):
    """Stored slices are float16 in [0, 1]; the networks work on float32 in [-1, 1] (a torch tensor)."""
    import torch  # here, so that stages without a network need not load torch

    return torch.from_numpy(np.asarray(batch, dtype=np.float32)) * 2 - 1
