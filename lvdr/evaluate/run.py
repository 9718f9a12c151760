"""Evaluate every predictions file of a dataset on its test split; collect all datasets in one file."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from lvdr.data import load_prepared
from lvdr.errors import DataError
from lvdr.evaluate.metrics import PAIRED, evaluate, paired_difference
from lvdr.files import read_json, write_json
from lvdr.predictions import read_predictions

log = logging.getLogger(__name__)


def method_of(path: Path) -> str:
    """``predictions/<method>.parquet``, or ``predictions/<method>/seed<k>.parquet`` for a method trained once per seed."""
    return path.parent.name if re.fullmatch(r"seed\d+", path.stem) else path.stem


def evaluate_dataset(dataset: str, prediction_files: list[str | Path], prepared_dir: str | Path, out: str | Path,
                     n_boot: int, seed: int) -> dict:
    data = load_prepared(prepared_dir)
    meta = data.meta
    cases = dict(zip(data.table.seq_id, data.table.case_id))
    results = {"dataset": dataset, "task": meta["task"], "methods": {}, "bootstrap": {"resamples": n_boot, "unit": "patient"}}
    draws: dict[str, dict] = {}
    grouped: dict[str, list[Path]] = {}
    for path in map(Path, prediction_files):
        grouped.setdefault(method_of(path), []).append(path)
    for method, paths in grouped.items():
        frames = []
        for path in paths:
            frame = read_predictions(path)
            test = frame[frame.split == "test"]
            if test.empty:
                raise DataError(f"{path}: no test sequences to evaluate")
            frames.append(test)
        test = pd.concat(frames, ignore_index=True)
        if len(paths) > 1 and ("seed" not in test.columns or test.seed.nunique() != len(paths)):
            raise DataError(f"{', '.join(map(str, paths))}: several predictions files for {method} need one distinct "
                            "`seed` each")
        runs = [g for _, g in test.groupby("seed")] if "seed" in test.columns else [test]
        predicted = sorted(int(c) for c in test.pred.unique())
        collapsed = [(int(g.seed.iloc[0]) if "seed" in g.columns else None, int(g.pred.iloc[0]))
                     for g in runs if g.pred.nunique() == 1]
        results["methods"][method] = {"n_test": len(runs[0]), "n_seeds": len(runs), "predicted_classes": predicted,
                                      "collapsed": collapsed,
                                      **evaluate(test, meta["task"], meta["num_classes"], n_boot, seed, cases,
                                                 draws.setdefault(method, {}))}
        for run_seed, cls in collapsed:
            log.warning("%s %s%s predicts class %d for every test sequence: it has not learned to tell them apart",
                        dataset, method, "" if run_seed is None else f" (seed {run_seed})", cls)
        shown = {k: v for k, v in results["methods"][method].items() if isinstance(v, dict) and v.get("value") is not None}
        log.info("%s %s (n=%d test sequences%s): %s", dataset, method, len(runs[0]),
                 f", mean of {len(runs)} seeds" if len(runs) > 1 else "",
                 ", ".join(f"{k} {v['value']:.3f}" + (f" ± {v['sd']:.3f}" if "sd" in v else "") for k, v in shown.items()))
    add_paired_differences(results["methods"], draws)
    write_json(out, results)
    return results


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


def summarize(metric_files: list[str | Path], out: str | Path) -> dict:
    """One flat file of point values, {dataset: {method: {metric: value}}}, for `dvc metrics show`."""
    summary = {}
    for path in metric_files:
        results = read_json(path)
        summary[results["dataset"]] = {
            method: {k: v["value"] for k, v in values.items() if isinstance(v, dict) and v.get("value") is not None}
            for method, values in results["methods"].items()
        }
    write_json(out, summary)
    return summary
