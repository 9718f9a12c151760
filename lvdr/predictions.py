"""The one predictions format every method writes (DESIGN.md, "Predictions").

One row per sequence: ``seq_id, split, grade, label_bin, p_0..p_{C-1}, p_bin, pred``.
Slice-level methods average class probabilities over a sequence's slices, as the paper's
baselines do. ``p_bin`` is the probability of the positive binary class (grade > 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lvdr.errors import DataError
from lvdr.files import write_table

KEYS = ["seq_id", "split", "grade", "label_bin"]


def prob_columns(num_classes: int) -> list[str]:
    return [f"p_{k}" for k in range(num_classes)]


def from_sequence_probs(sequences: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    """Predictions from per-sequence class probabilities (rows aligned with ``sequences``)."""
    probs = np.asarray(probs, dtype=float)
    out = sequences[KEYS].reset_index(drop=True).copy()
    for k, col in enumerate(prob_columns(probs.shape[1])):
        out[col] = probs[:, k]
    out["p_bin"] = 1.0 - probs[:, 0]
    out["pred"] = probs.argmax(axis=1)
    return out


def aggregate_slices(table: pd.DataFrame, slice_probs: np.ndarray) -> pd.DataFrame:
    """Average slice probabilities over each sequence (``table`` rows align with ``slice_probs``)."""
    cols = prob_columns(slice_probs.shape[1])
    frame = pd.DataFrame(np.asarray(slice_probs, dtype=float), columns=cols)
    frame["seq_id"] = table.seq_id.to_numpy()
    means = frame.groupby("seq_id", sort=False)[cols].mean()
    sequences = table.drop_duplicates("seq_id").set_index("seq_id").loc[means.index].reset_index()
    return from_sequence_probs(sequences, means.to_numpy())


def write_predictions(path: str | Path, predictions: pd.DataFrame) -> None:
    write_table(path, predictions)


def read_predictions(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: predictions file not found")
    frame = pd.read_parquet(path)
    missing = [c for c in KEYS + ["p_0", "p_bin", "pred"] if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a predictions file, missing column(s) {', '.join(missing)}")
    return frame
