"""The one predictions format every method writes (DESIGN.md, "Predictions").

One row per sequence: ``seq_id, split, grade, label_bin, p_0..p_{C-1}, p_bin, pred``.
Slice-level methods average class probabilities over a sequence's slices, as the paper's
baselines do. ``p_bin`` is the probability of the positive binary class (grade > 0). A method
whose binary decision threshold was chosen on validation adds a ``threshold`` column; without
one the threshold is 0.5.
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


def decide(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """The predicted class of each row of class probabilities: the most probable one or, for a binary
    task with a stored ``threshold``, positive where P(class 1) reaches it."""
    probs = np.asarray(probs)
    if threshold is not None and probs.shape[-1] == 2:
        return (probs[..., 1] >= threshold).astype(int)
    return probs.argmax(-1)


def choose_threshold(p_bin: np.ndarray, label_bin: np.ndarray) -> float:
    """The threshold on p_bin that maximises balanced accuracy (Youden's J) on validation; among ties the
    one nearest 0.5, and 0.5 itself when validation has a single class. A model whose probabilities are
    shifted (every slab below 0.5, say) then still makes its decisions where its ranking separates."""
    p, y = np.asarray(p_bin, dtype=float), np.asarray(label_bin).astype(bool)
    if y.all() or not y.any():
        return 0.5
    ordered = np.unique(p)
    candidates = np.concatenate([[0.5], (ordered[1:] + ordered[:-1]) / 2]) if len(ordered) > 1 else np.array([0.5])
    decided = p[None, :] >= candidates[:, None]
    youden = decided[:, y].mean(1) - decided[:, ~y].mean(1)
    best = np.flatnonzero(np.isclose(youden, youden.max()))
    return float(candidates[best[np.argmin(np.abs(candidates[best] - 0.5))]])


def apply_threshold(predictions: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Binary-task predictions decided at ``threshold``: ``pred`` and the ``threshold`` column."""
    out = predictions.copy()
    out["pred"] = (out.p_bin >= threshold).astype(int)
    out["threshold"] = threshold
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
