"""Binary AUC (from probabilities) and F1, ordinal MAE and macro F1, balanced accuracy, and
MedMNIST's two metrics (multi-class accuracy, macro one-vs-rest AUC), each with a bootstrap 95%
interval over test patients.

Binary metrics use ``label_bin`` and ``p_bin`` (AUC) or ``p_bin >= threshold`` (F1; the threshold
column the method stored, chosen on validation, else 0.5). Ordinal metrics
use ``grade`` and ``pred``; for binary tasks they are not defined (None). Balanced accuracy
compares ``pred`` with ``grade``: over the grades for graded tasks, over the two classes for
binary ones. ``acc`` and ``auc_ovr`` are defined for graded tasks: accuracy of ``pred`` and the
mean over grades of the AUC of ``p_<grade>`` for that grade against the rest (as ``medmnist.Evaluator``
computes them), NaN when a grade is missing from the test set. ``ece_bin`` is the expected
calibration error of ``p_bin``: over ten equal-width bins of the score, the share-weighted gap
between the mean score and the share of positives (0 for a calibrated model; a constant 0.5 on a
balanced set also scores 0, which is why AUC stands beside it).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

METRICS = ("auc_bin", "f1_bin", "mae_ord", "f1_ord", "balanced_acc", "acc", "auc_ovr", "ece_bin")
ECE_BINS = 10


def calibration_bins(p: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each probability: ten equal-width bins over [0, 1], the last one closed."""
    return np.minimum((np.asarray(p, dtype=float) * bins).astype(int), bins - 1)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of the sequences in the bin) x |share of positives - mean probability|."""
    return float(_ece(np.ones((1, len(p))), np.asarray(y, dtype=float), np.asarray(p, dtype=float), bins)[0])


def threshold_of(frame: pd.DataFrame) -> np.ndarray | float:
    """The binary decision threshold of each row: the stored ``threshold`` column, else 0.5."""
    return frame.threshold.to_numpy(dtype=float) if "threshold" in frame.columns else 0.5


def point_metrics(frame: pd.DataFrame, task: str, num_classes: int) -> dict[str, float | None]:
    y_bin, p_bin = frame.label_bin.to_numpy(), frame.p_bin.to_numpy()
    grade, pred = frame.grade.to_numpy(), frame.pred.to_numpy()
    out: dict[str, float | None] = {
        "auc_bin": float(roc_auc_score(y_bin, p_bin)) if len(np.unique(y_bin)) == 2 else math.nan,
        "f1_bin": float(f1_score(y_bin, (p_bin >= threshold_of(frame)).astype(int), zero_division=0)),
        "mae_ord": None,
        "f1_ord": None,
        "balanced_acc": float(balanced_accuracy_score(grade, pred)),
        "acc": None,
        "auc_ovr": None,
        "ece_bin": expected_calibration_error(y_bin, p_bin),
    }
    if task == "ordinal":
        out["mae_ord"] = float(np.abs(grade - pred).mean())
        out["f1_ord"] = float(f1_score(grade, pred, labels=list(range(num_classes)), average="macro", zero_division=0))
        out["acc"] = float((grade == pred).mean())
        present = all(0 < (grade == c).sum() < len(grade) for c in range(num_classes))
        out["auc_ovr"] = float(np.mean([roc_auc_score(grade == c, frame[f"p_{c}"]) for c in range(num_classes)])) \
            if present else math.nan
    return out


def selection_score(frame: pd.DataFrame, task: str) -> float:
    """The validation score that picks models: MAE (lower is better) for graded, AUC for binary tasks."""
    if task == "ordinal":
        return float(np.abs(frame.grade.to_numpy() - frame.pred.to_numpy()).mean())
    y = frame.label_bin.to_numpy()
    return float(roc_auc_score(y, frame.p_bin.to_numpy())) if len(np.unique(y)) == 2 else -math.inf


def resample_metrics(frame: pd.DataFrame, task: str, num_classes: int, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric for many resamples at once; ``weights[b, i]`` is how often sequence i is in resample b.

    A bootstrap that calls sklearn once per resample spends most of the evaluation in sklearn's input
    checks; these weighted closed forms give the same numbers (tested against sklearn) for all resamples
    in a few matrix products. A metric a resample cannot define (AUC without both classes) is NaN.
    """
    w = np.asarray(weights, dtype=float)
    y_bin, p_bin = frame.label_bin.to_numpy().astype(bool), frame.p_bin.to_numpy(dtype=float)
    grade, pred = frame.grade.to_numpy(), frame.pred.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {"auc_bin": _auc(w, y_bin, p_bin), "f1_bin": _f1(w, y_bin, p_bin >= threshold_of(frame)), "mae_ord": None,
               "f1_ord": None, "acc": None, "auc_ovr": None, "ece_bin": _ece(w, y_bin.astype(float), p_bin)}
        classes = np.union1d(grade, pred) if task == "binary" else np.arange(num_classes)
        hits = np.stack([w @ ((grade == c) & (pred == c)) for c in classes], 1)
        support = np.stack([w @ (grade == c) for c in classes], 1)
        recall = np.where(support > 0, hits / support, np.nan)
        out["balanced_acc"] = np.nanmean(recall, 1)  # like sklearn: over the classes present in the truth
        if task == "ordinal":
            out["mae_ord"] = (w @ np.abs(grade - pred)) / w.sum(1)
            out["f1_ord"] = np.stack([_f1(w, grade == c, pred == c) for c in classes], 1).mean(1)
            out["acc"] = (w @ (grade == pred)) / w.sum(1)
            out["auc_ovr"] = np.stack([_auc(w, grade == c, frame[f"p_{c}"].to_numpy(dtype=float))
                                       for c in classes], 1).mean(1)  # NaN where a resample lacks a grade
    return out


def _auc(w: np.ndarray, truth: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Weighted AUC as the Mann-Whitney statistic: ordered (positive, negative) pairs, ties count half."""
    pos, neg = score[truth], score[~truth]
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    w_pos, w_neg = w[:, truth], w[:, ~truth]
    return np.einsum("bi,ij,bj->b", w_pos, pairs, w_neg) / (w_pos.sum(1) * w_neg.sum(1))


def _ece(w: np.ndarray, truth: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> np.ndarray:
    """Weighted expected calibration error: sum over bins of |sum of w (truth - p) in the bin| / sum of w."""
    member = calibration_bins(p, bins)[None, :] == np.arange(bins)[:, None]  # (bins, n)
    return np.abs((w * (truth - p)) @ member.T).sum(1) / w.sum(1)


def _f1(w: np.ndarray, truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Weighted F1 of one class; 0 where it has neither true nor predicted members (sklearn's zero_division=0)."""
    tp, fp, fn = w @ (truth & predicted), w @ (~truth & predicted), w @ (truth & ~predicted)
    denominator = 2 * tp + fp + fn
    return np.where(denominator > 0, 2 * tp / np.where(denominator > 0, denominator, 1), 0.0)


def patient_weights(seq_ids: np.ndarray, cases: dict | None, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``weights[b, i]``: how often sequence i is drawn in resample b, resampling patients.

    A SPIDER patient has several discs and a BraTS case several slabs; their errors go together, so
    the resample draws patients (``cases``: seq_id -> case_id) with replacement and takes all of
    each drawn patient's sequences. Without ``cases`` every sequence is its own patient.
    """
    keys = np.asarray([cases[s] for s in seq_ids] if cases else seq_ids)
    patients, owner = np.unique(keys, return_inverse=True)
    drawn = rng.integers(0, len(patients), (n_boot, len(patients)))
    counts = np.zeros((n_boot, len(patients)))
    np.add.at(counts, (np.arange(n_boot)[:, None], drawn), 1.0)
    return counts[:, owner]


def evaluate(frame: pd.DataFrame, task: str, num_classes: int, n_boot: int, seed: int, cases: dict | None = None,
             draws_out: dict | None = None) -> dict:
    """Point value and bootstrap 95% interval of each metric over the test sequences in ``frame``.

    The bootstrap resamples patients (``cases``, see ``patient_weights``). A frame with a ``seed``
    column holds one model per seed (every seed predicting every test sequence). Then the value is
    the mean over seeds, ``sd`` their standard deviation, ``seeds`` each seed's value, and each
    resample draws a seed as well as the patients, so the interval reflects both the test sample and
    the training seed. Sequences are taken in seq_id order and the generator is seeded from
    ``seed`` alone, so every method of a dataset sees the same resamples: ``draws_out`` receives each
    metric's per-resample values, for paired comparisons between methods.
    """
    runs = [group for _, group in frame.groupby("seed", sort=True)] if "seed" in frame.columns else [frame]
    order = np.sort(runs[0].seq_id.to_numpy())
    runs = [run.set_index("seq_id").loc[order].reset_index() for run in runs]  # same sequence order in every seed
    points = [point_metrics(run, task, num_classes) for run in runs]
    rng = np.random.default_rng(seed)
    weights = patient_weights(order, cases, n_boot, rng)
    draws = [resample_metrics(run, task, num_classes, weights) for run in runs]
    chosen = rng.integers(0, len(runs), n_boot)  # the seed behind each resample
    result = {}
    for key in METRICS:
        values = [p[key] for p in points]
        if any(v is None or math.isnan(v) for v in values):
            result[key] = {"value": None, "ci_low": None, "ci_high": None}
            continue
        mixed = np.stack([d[key] for d in draws])[chosen, np.arange(n_boot)]
        if draws_out is not None:
            draws_out[key] = mixed
        result[key] = {"value": float(np.mean(values)), **interval(mixed)}
        if len(runs) > 1:
            result[key].update(sd=float(np.std(values, ddof=1)), seeds=[float(v) for v in values])
    if len(runs) > 1:
        result["seeds"] = [int(run.seed.iloc[0]) for run in runs]
    return result


def interval(draws: np.ndarray) -> dict:
    """The 95% percentile interval of bootstrap draws, NaN draws (undefined resamples) left out."""
    valid = draws[~np.isnan(draws)]
    if not valid.size:
        return {"ci_low": None, "ci_high": None}
    low, high = np.percentile(valid, [2.5, 97.5])
    return {"ci_low": float(low), "ci_high": float(high)}


# The metrics on which every method is compared with LVDR, paired.
PAIRED = ("auc_bin", "mae_ord")


def paired_difference(mine: np.ndarray, reference: np.ndarray, value: float) -> dict:
    """A method's metric minus the reference's, with the 95% interval of that difference over the
    resamples both were evaluated on (the same patients drawn for both: a paired bootstrap)."""
    return {"diff": float(value), **interval(mine - reference)}
