"""DiffAE+LR and DiffAE+SVM (Atad et al. 2024): linear classifiers on standardised slice latents.

Trained on the train split's slices with their sequence's grade; the regularisation C is
chosen on the validation split at the sequence level (MAE for graded tasks, AUC for binary);
slice probabilities are averaged per sequence. The fitted DiffAE+LR is also kept as plain numbers
(``save_linear``, JSON, no pickle): the explanations use it to grade images they decode.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from lvdr.data import Prepared
from lvdr.errors import DataError
from lvdr.files import read_json, write_json
from lvdr.evaluate.metrics import selection_score
from lvdr.predictions import aggregate_slices

log = logging.getLogger(__name__)
METHODS = ("diffae_lr", "diffae_svm")


def make_classifier(method: str, C: float, max_iter: int, seed: int, y: np.ndarray):
    if method == "diffae_lr":
        classifier = LogisticRegression(C=C, max_iter=max_iter)
    elif method == "diffae_svm":  # a linear SVM has no probabilities: calibrate them (Platt) by 3-fold CV
        folds = 3
        if np.unique(y, return_counts=True)[1].min() < 3:  # too rare to stratify: plain shuffled folds
            folds = list(KFold(3, shuffle=True, random_state=seed).split(y))
        classifier = CalibratedClassifierCV(LinearSVC(C=C, max_iter=max_iter, random_state=seed), cv=folds)
    else:
        raise ValueError(f"unknown latent baseline {method!r}; expected one of {METHODS}")
    return make_pipeline(StandardScaler(), classifier)


def full_probs(model, z: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities with a column for every class, also those absent from training."""
    probs = np.zeros((len(z), num_classes))
    probs[:, model.classes_] = model.predict_proba(z)
    return probs


def fit_predict(method: str, z: np.ndarray, data: Prepared, cfg: dict, seed: int):
    table = data.table
    train, val = data.rows("train"), data.rows("val")
    if len(np.unique(table.grade.to_numpy()[train])) < 2:
        raise DataError(f"{method}: the train split holds a single grade; nothing to learn")
    task = data.meta["task"]
    y = table.grade.to_numpy()[train]
    best = None
    for C in cfg["C_grid"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = make_classifier(method, C, cfg["max_iter"], seed, y).fit(z[train], y)
        score = selection_score(aggregate_slices(table.iloc[val], full_probs(model, z[val], data.num_classes)), task)
        log.info("%s C=%g: validation %s %.4f", method, C, "MAE" if task == "ordinal" else "AUC", score)
        # lower MAE or higher AUC wins; on ties the stronger regularisation (earlier, smaller C) stays
        if best is None or (score < best[0] if task == "ordinal" else score > best[0]):
            best = (score, C, model)
    score, C, model = best
    log.info("%s: chose C=%g (validation score %.4f)", method, C, score)
    return aggregate_slices(table, full_probs(model, np.asarray(z), data.num_classes)), {"C": C, "val_score": score, "model": model}


def save_linear(model, path, C: float, num_classes: int) -> None:
    """A fitted standardise + logistic-regression pipeline as JSON numbers (reloading it runs no code)."""
    scaler, lr = model[0], model[-1]
    write_json(path, {"method": "diffae_lr", "C": C, "num_classes": num_classes, "mean": scaler.mean_.tolist(),
                      "scale": scaler.scale_.tolist(), "coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist(),
                      "classes": lr.classes_.tolist()})


def load_linear(path):
    """``save_linear``'s pipeline again, with sklearn's own predict_proba; and the number of classes."""
    saved = read_json(path)
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_ = np.asarray(saved["mean"]), np.asarray(saved["scale"])
    scaler.var_, scaler.n_features_in_ = scaler.scale_ ** 2, len(scaler.mean_)
    lr = LogisticRegression(C=saved["C"])
    lr.coef_, lr.intercept_ = np.asarray(saved["coef"]), np.asarray(saved["intercept"])
    lr.classes_, lr.n_features_in_ = np.asarray(saved["classes"]), lr.coef_.shape[1]
    return make_pipeline(scaler, lr), int(saved["num_classes"])
