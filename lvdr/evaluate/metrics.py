"""Binary AUC (from probabilities) and F1, ordinal MAE and macro F1, balanced accuracy, each with
a bootstrap 95% interval over test sequences.

Binary metrics use ``label_bin`` and ``p_bin`` (AUC) or ``p_bin >= 0.5`` (F1). Ordinal metrics
use ``grade`` and ``pred``; for binary tasks they are not defined (None). Balanced accuracy
compares ``pred`` with ``grade``: over the grades for graded tasks, over the two classes for
binary ones.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

METRICS = ("auc_bin", "f1_bin", "mae_ord", "f1_ord", "balanced_acc")


def point_metrics(frame: pd.DataFrame, task: str, num_classes: int) -> dict[str, float | None]:
    y_bin, p_bin = frame.label_bin.to_numpy(), frame.p_bin.to_numpy()
    grade, pred = frame.grade.to_numpy(), frame.pred.to_numpy()
    out: dict[str, float | None] = {
        "auc_bin": float(roc_auc_score(y_bin, p_bin)) if len(np.unique(y_bin)) == 2 else math.nan,
        "f1_bin": float(f1_score(y_bin, (p_bin >= 0.5).astype(int), zero_division=0)),
        "mae_ord": None,
        "f1_ord": None,
        "balanced_acc": float(balanced_accuracy_score(grade, pred)),
    }
    if task == "ordinal":
        out["mae_ord"] = float(np.abs(grade - pred).mean())
        out["f1_ord"] = float(f1_score(grade, pred, labels=list(range(num_classes)), average="macro", zero_division=0))
    return out


def selection_score(frame: pd.DataFrame, task: str) -> float:
    """The validation score that picks models: MAE (lower is better) for graded, AUC for binary tasks."""
    if task == "ordinal":
        return float(np.abs(frame.grade.to_numpy() - frame.pred.to_numpy()).mean())
    y = frame.label_bin.to_numpy()
    return float(roc_auc_score(y, frame.p_bin.to_numpy())) if len(np.unique(y)) == 2 else -math.inf


def evaluate(frame: pd.DataFrame, task: str, num_classes: int, n_boot: int, seed: int) -> dict:
    """Point value and bootstrap 95% interval of each metric over the test sequences in ``frame``."""
    point = point_metrics(frame, task, num_classes)
    rng = np.random.default_rng(seed)
    draws = {k: [] for k in METRICS}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a resample may lack a class the model predicts
        for _ in range(n_boot):
            sample = frame.iloc[rng.integers(0, len(frame), len(frame))]
            for key, value in point_metrics(sample, task, num_classes).items():
                if value is not None and not math.isnan(value):
                    draws[key].append(value)
    result = {}
    for key in METRICS:
        value = point[key]
        if value is None or math.isnan(value) or not draws[key]:
            result[key] = {"value": None if value is None or math.isnan(value) else value, "ci_low": None, "ci_high": None}
            continue
        low, high = np.percentile(draws[key], [2.5, 97.5])
        result[key] = {"value": value, "ci_low": float(low), "ci_high": float(high)}
    return result
