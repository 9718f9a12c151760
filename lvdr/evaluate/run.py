"""Evaluate every predictions file of a dataset on its test split; collect all datasets in one file."""

from __future__ import annotations

import logging
from pathlib import Path

from lvdr.data import load_prepared
from lvdr.errors import DataError
from lvdr.evaluate.metrics import evaluate
from lvdr.files import read_json, write_json
from lvdr.predictions import read_predictions

log = logging.getLogger(__name__)


def evaluate_dataset(dataset: str, prediction_files: list[str | Path], prepared_dir: str | Path, out: str | Path,
                     n_boot: int, seed: int) -> dict:
    meta = load_prepared(prepared_dir).meta
    results = {"dataset": dataset, "task": meta["task"], "methods": {}}
    for path in prediction_files:
        path = Path(path)
        frame = read_predictions(path)
        test = frame[frame.split == "test"]
        if test.empty:
            raise DataError(f"{path}: no test sequences to evaluate")
        method = path.stem
        predicted = sorted(int(c) for c in test.pred.unique())
        results["methods"][method] = {"n_test": len(test), "predicted_classes": predicted,
                                      **evaluate(test, meta["task"], meta["num_classes"], n_boot, seed)}
        if len(predicted) == 1:
            log.warning("%s %s predicts class %d for every test sequence: it has not learned to tell them apart",
                        dataset, method, predicted[0])
        shown = {k: v["value"] for k, v in results["methods"][method].items() if isinstance(v, dict) and v["value"] is not None}
        log.info("%s %s (n=%d test sequences): %s", dataset, method, len(test),
                 ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    write_json(out, results)
    return results


def summarize(metric_files: list[str | Path], out: str | Path) -> dict:
    """One flat file of point values, {dataset: {method: {metric: value}}}, for `dvc metrics show`."""
    summary = {}
    for path in metric_files:
        results = read_json(path)
        summary[results["dataset"]] = {
            method: {k: v["value"] for k, v in values.items() if isinstance(v, dict) and v["value"] is not None}
            for method, values in results["methods"].items()
        }
    write_json(out, summary)
    return summary
