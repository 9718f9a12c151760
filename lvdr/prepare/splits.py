"""Patient-level splits: every slice of a patient lands in the same split."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold


def holdout_groups(groups, strata, fraction: float, seed: int) -> set:
    """About ``fraction`` of the groups, stratified by ``strata`` where the counts allow it."""
    frame = pd.DataFrame({"group": np.asarray(groups), "stratum": np.asarray(strata)})
    n_groups = frame.group.nunique()
    if n_groups < 2:
        return set()
    n_splits = min(max(2, round(1 / fraction)), n_groups)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        try:
            splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
            _, held = next(splitter.split(frame, frame.stratum, frame.group))
        except ValueError:
            splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            _, held = next(splitter.split(frame, groups=frame.group))
    return set(frame.group.iloc[held])


def train_val_test(groups, strata, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Split names per row for data without an official test split (test first, then val from the rest)."""
    groups, strata = np.asarray(groups), np.asarray(strata)
    test = holdout_groups(groups, strata, test_fraction, seed)
    rest = ~np.isin(groups, list(test))
    val = holdout_groups(groups[rest], strata[rest], val_fraction / (1 - test_fraction), seed + 1)
    return np.where(np.isin(groups, list(test)), "test", np.where(np.isin(groups, list(val)), "val", "train"))
