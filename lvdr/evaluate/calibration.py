"""Temperature scaling (Guo et al. 2017): one number T, fitted on a run's validation sequences, that
softens (T > 1) or sharpens (T < 1) every class distribution the run predicts, softmax(log p / T).
It keeps each sequence's ranking of the classes, so AUC and the argmax are unchanged; only the
probabilities, and with them the calibration (ECE) and thresholded decisions, move. Works from the
predictions files' probabilities alone, so it applies to every method alike.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

LOG_T_BOUNDS = (-4.0, 4.0)  # T between e^-4 and e^4: beyond that the fit has found no signal, only a bound


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log p / T), row by row."""
    logits = np.log(np.clip(np.asarray(probs, dtype=float), 1e-12, None))
    return np.exp(log_softmax(logits / temperature, axis=1))


def at_bound(temperature: float) -> bool:
    """Did the fit stop at a bound of LOG_T_BOUNDS (no optimum inside: the T is the bound's, not measured)?"""
    return bool(min(abs(np.log(temperature) - b) for b in LOG_T_BOUNDS) < 1e-6)


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The T that minimises the negative log-likelihood of ``labels`` under ``scale(probs, T)``.

    When every sequence's most probable class is its label, the likelihood rises without end as T
    falls (each term's derivative in 1/T is the mean logit minus the largest): there is no optimum to
    find, and the lower bound is returned, for the report to mark as such."""
    logits = np.log(np.clip(np.asarray(probs, dtype=float), 1e-12, None))
    labels = np.asarray(labels, dtype=int)
    if np.all(logits.argmax(1) == labels):
        return float(np.exp(LOG_T_BOUNDS[0]))

    def nll(log_t: float) -> float:
        return -float(log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(labels)), labels].mean())

    return float(np.exp(minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded").x))
