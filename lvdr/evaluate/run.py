"""Evaluate every predictions file of a dataset on its test split.

Writes the full results (``metrics.json``: every metric with its interval, seeds, paired
differences, and the binary score's ECE before and after temperature scaling fitted on each run's
validation sequences), and beside it what DVC reads: ``metrics/<method>.json``, the paper's four metrics
with their intervals as separate keys (`dvc metrics show`), and ``roc/<method>.csv``, each test
ROC curve (`dvc plots show`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_curve

from lvdr.data import load_prepared
from lvdr.errors import DataError
from lvdr.evaluate.calibration import at_bound, fit_temperature, scale
from lvdr.evaluate.metrics import ECE_BINS, PAIRED, calibration_bins, evaluate, expected_calibration_error, paired_difference
from lvdr.files import write_csv, write_json
from lvdr.predictions import prob_columns, read_predictions

log = logging.getLogger(__name__)


def method_of(path: Path) -> str:
    """``predictions/<method>.parquet``, or ``predictions/<method>/seed<k>.parquet`` for a method trained once per seed."""
    return path.parent.name if re.fullmatch(r"seed\d+", path.stem) else path.stem


def seed_of(run: pd.DataFrame) -> int | None:
    """The training seed of one run's predictions (None for a method trained once, without a seed column)."""
    return int(run.seed.iloc[0]) if "seed" in run.columns else None


def reliability(y: np.ndarray, p: np.ndarray) -> dict:
    """The reliability diagram's points of a binary score (every seed's test rows pooled): per non-empty
    bin of ``calibration_bins``, the mean score, the share of positives and the count."""
    bins = calibration_bins(p)
    keep = [b for b in range(ECE_BINS) if (bins == b).any()]
    return {"mean_p": [round(float(p[bins == b].mean()), 4) for b in keep],
            "frac_pos": [round(float(y[bins == b].mean()), 4) for b in keep],
            "n": [int((bins == b).sum()) for b in keep]}


def temperature_scaled(val: pd.DataFrame, test: pd.DataFrame, num_classes: int) -> tuple[float | None, np.ndarray | None]:
    """Temperature scaling of one run: T fitted on its validation sequences and its test rows' p_bin after
    scaling; (None, None) without validation sequences of two or more classes to fit on."""
    if val.empty or val.grade.nunique() < 2:
        return None, None
    columns = prob_columns(num_classes)
    t = fit_temperature(val[columns].to_numpy(dtype=float), val.grade.to_numpy())
    return t, 1.0 - scale(test[columns].to_numpy(dtype=float), t)[:, 0]


def evaluate_dataset(dataset: str, prediction_files: list[str | Path], prepared_dir: str | Path, out: str | Path,
                     n_boot: int, seed: int) -> dict:
    data = load_prepared(prepared_dir)
    meta = data.meta
    cases = dict(zip(data.table.seq_id, data.table.case_id))
    results = {"dataset": dataset, "task": meta["task"], "methods": {}, "bootstrap": {"resamples": n_boot, "unit": "patient"}}
    draws: dict[str, dict] = {}
    grouped: dict[str, list[Path]] = {}
    tests: dict[Path, pd.DataFrame] = {}  # each predictions file's test rows, read once
    for path in map(Path, prediction_files):
        grouped.setdefault(method_of(path), []).append(path)
    for method, paths in grouped.items():
        scaled = []  # per run: (T fitted on its validation sequences, its test rows' p_bin after scaling)
        for path in paths:
            frame = read_predictions(path)
            tests[path] = frame[frame.split == "test"]
            if tests[path].empty:
                raise DataError(f"{path}: no test sequences to evaluate")
            scaled.append(temperature_scaled(frame[frame.split == "val"], tests[path], meta["num_classes"]))
        test = pd.concat([tests[path] for path in paths], ignore_index=True)
        if len(paths) > 1 and ("seed" not in test.columns or test.seed.nunique() != len(paths)):
            raise DataError(f"{', '.join(map(str, paths))}: several predictions files for {method} need one distinct "
                            "`seed` each")
        runs = [g for _, g in test.groupby("seed")] if "seed" in test.columns else [test]
        predicted = sorted(int(c) for c in test.pred.unique())
        collapsed = [(seed_of(g), int(g.pred.iloc[0])) for g in runs if g.pred.nunique() == 1]
        # a constant binary score: AUC 0.5 by construction, and every binary prediction on one side of the threshold
        constant = [(seed_of(g), float(g.p_bin.iloc[0])) for g in runs if np.ptp(g.p_bin.to_numpy(dtype=float)) < 1e-6]
        results["methods"][method] = {"n_test": len(runs[0]), "n_seeds": len(runs), "predicted_classes": predicted,
                                      "collapsed": collapsed, "constant_score": constant,
                                      "reliability": reliability(test.label_bin.to_numpy(), test.p_bin.to_numpy(dtype=float)),
                                      **evaluate(test, meta["task"], meta["num_classes"], n_boot, seed, cases,
                                                 draws.setdefault(method, {}))}
        if all(t is not None for t, _ in scaled):
            y_bin = test.label_bin.to_numpy()
            results["methods"][method]["temperature"] = {
                "per_run": [round(t, 4) for t, _ in scaled], "at_bound": [at_bound(t) for t, _ in scaled],
                "ece_before": expected_calibration_error(y_bin, test.p_bin.to_numpy(dtype=float)),
                "ece_after": expected_calibration_error(y_bin, np.concatenate([p for _, p in scaled]))}
        for run_seed, cls in collapsed:
            log.warning("%s %s%s predicts class %d for every test sequence: it has not learned to tell them apart",
                        dataset, method, "" if run_seed is None else f" (seed {run_seed})", cls)
        shown = {k: v for k, v in results["methods"][method].items() if isinstance(v, dict) and v.get("value") is not None}
        log.info("%s %s (n=%d test sequences%s): %s", dataset, method, len(runs[0]),
                 f", mean of {len(runs)} seeds" if len(runs) > 1 else "",
                 ", ".join(f"{k} {v['value']:.3f}" + (f" ± {v['sd']:.3f}" if "sd" in v else "") for k, v in shown.items()))
    add_paired_differences(results["methods"], draws)
    write_json(out, results)
    write_dvc_views(Path(out).parent, results, grouped, tests)
    return results


DVC_METRICS = ("auc_bin", "f1_bin", "mae_ord", "f1_ord")  # the paper's four; the report shows the rest


def write_dvc_views(folder: Path, results: dict, grouped: dict[str, list[Path]], tests: dict[Path, pd.DataFrame]) -> None:
    """One small metrics file per method (value, sd over seeds, interval as separate keys) and the ROC
    curve of each predictions file (``tests``: its test rows), replacing whatever an earlier run left there."""
    for sub in ("metrics", "roc"):
        for old in (folder / sub).glob("*.*"):
            old.unlink()
    for method, values in results["methods"].items():
        flat = {}
        for key in DVC_METRICS:
            v = values.get(key)
            if v and v.get("value") is not None:
                flat[key] = round(v["value"], 4)
                flat.update({f"{key}_{part}": round(v[name], 4) for part, name in (("sd", "sd"), ("lo", "ci_low"),
                                                                                  ("hi", "ci_high")) if v.get(name) is not None})
        write_json(folder / "metrics" / f"{method}.json", flat)
        for path in grouped[method]:
            test = tests[path]
            if test.label_bin.nunique() == 2:
                fpr, tpr, _ = roc_curve(test.label_bin, test.p_bin)
                name = method if len(grouped[method]) == 1 else f"{method}_{path.stem}"
                write_csv(folder / "roc" / f"{name}.csv", pd.DataFrame({"fpr": fpr.round(5), "tpr": tpr.round(5)}))


def add_paired_differences(methods: dict, draws: dict) -> None:
    """Each method against LVDR: the difference in AUC and MAE with its paired-bootstrap 95% interval."""
    if "lvdr" not in methods:
        return
    for method, values in methods.items():
        if method == "lvdr":
            continue
        values["vs_lvdr"] = {key: paired_difference(draws[method][key], draws["lvdr"][key],
                                                    values[key]["value"] - methods["lvdr"][key]["value"])
                             for key in PAIRED if key in draws[method] and key in draws["lvdr"]}

