"""How well a DiffAE's semantic latents carry the grade, read on the training split alone.

Stage 1 is a lottery on a short run: on one CPU, the demo SPIDER's DiffAE with seed 0 learnt latents
from which a logistic regression grades discs with a mean absolute error of 0.30, against 0.15-0.18 for
seeds 1-3, and every model after it inherits that (README, "On another machine of the same kind").
``diffae.inits`` starts several encoders, trains each a few steps and keeps the one this probe scores
best. It never sees validation or test sequences: a logistic regression on each training sequence's
mean z, cross-validated with folds by patient (stratified by grade), scored by its mean absolute grade error.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lvdr.data import Prepared


@torch.no_grad()
def sequence_means(model, data: Prepared, device, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean z, grade, patient) of every training sequence, z from ``model``'s encoder in eval mode."""
    from lvdr.diffae.cache import encode_slices  # the cache's own encoding, so the probe reads what later stages read

    table = data.table[data.table.split == "train"]
    rows = table.row.to_numpy()
    was_training = model.training
    model.eval()
    z = np.concatenate([encode_slices(model, data.slices[rows[i:i + batch_size]], device)[0]
                        for i in range(0, len(rows), batch_size)])
    model.train(was_training)
    codes = table.assign(i=np.arange(len(table))).groupby("seq_id", sort=True)
    means = np.stack([z[group.i.to_numpy()].mean(0) for _, group in codes])
    first = codes.first()
    return means, first.grade.to_numpy(), first.case_id.to_numpy()


def grade_error(z: np.ndarray, grade: np.ndarray, patient: np.ndarray, seed: int) -> float | None:
    """Cross-validated mean absolute grade error of a logistic regression on z (at most 5 folds by patient, each
    with about the grades' mix);
    None when the training split is too small to fold (fewer than 2 patients or one grade)."""
    folds = min(5, len(np.unique(patient)))
    if folds < 2 or len(np.unique(grade)) < 2:
        return None
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    try:
        folds = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        predicted = cross_val_predict(model, z, grade, groups=patient, cv=folds)
    except ValueError:  # a fold whose training patients hold a single grade
        return None
    return float(np.abs(predicted - grade).mean())
