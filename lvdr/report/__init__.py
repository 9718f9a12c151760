"""The self-contained HTML report: every figure embedded, one file to read or send."""

from __future__ import annotations

import datetime
import html
import logging
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from lvdr import __version__
from lvdr.errors import DataError
from lvdr.files import atomic_path, read_json
from lvdr.evaluate.metrics import METRICS, PAIRED
from lvdr.evaluate.paper import paper_rows
from lvdr.report import figures

log = logging.getLogger(__name__)

TITLES = {
    "spider": "SPIDER: lumbar discs, Pfirrmann grade (0-4)",
    "brats": "BraTS: FLAIR volumes, edema present (1) or absent (0)",
    "retinamnist": "RetinaMNIST: fundus images, DR severity (0-4)",
}


def counts_table(sequences: pd.DataFrame) -> str:
    """Sequences by split (rows) and grade (columns), with totals."""
    table = pd.crosstab(sequences.split, sequences.grade, margins=True, margins_name="all")
    order = [s for s in figures.SPLIT_ORDER if s in table.index] + ["all"]
    table = table.loc[order]
    table.columns = [f"grade {c}" if c != "all" else "all" for c in table.columns]
    table.index.name = None
    return table.to_html(classes="counts", border=0)


METHOD_NAMES = {"diffae_lr": "DiffAE + LR", "diffae_svm": "DiffAE + SVM", "densenet121": "DenseNet121", "lvdr": "LVDR",
                "lvdr_no_traj": "LVDR, λ_traj = 0 (ablation)"}


def _fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


METRIC_COLUMNS = {"auc_bin": "AUC (bin) ↑", "f1_bin": "F1 (bin) ↑", "mae_ord": "MAE (ord) ↓", "f1_ord": "F1 (ord) ↑",
                  "balanced_acc": "balanced acc. ↑", "acc": "ACC ↑", "auc_ovr": "AUC (macro one-vs-rest) ↑"}


def metrics_table(name: str, metrics: dict | None) -> str:
    """Measured rows (with bootstrap 95% intervals) above the published rows, labelled apart; a metric
    that applies to no row of this dataset (ordinal metrics of a binary task) gets no column."""
    rows = []
    for method, values in (metrics or {}).get("methods", {}).items():
        cells = []
        for key in METRICS:
            v = values.get(key, {"value": None, "ci_low": None})
            cell = _fmt(v["value"]) + (f" ± {_fmt(v['sd'])}" if "sd" in v else "")
            cell += f" [{_fmt(v['ci_low'], 2)}, {_fmt(v['ci_high'], 2)}]" if v["ci_low"] is not None else ""
            if "seeds" in v:
                cell += "<br><small>seeds: " + ", ".join(_fmt(x) for x in v["seeds"]) + "</small>"
            cells.append(cell)
        seeds = values.get("n_seeds", 1)
        source = f"measured (n={values['n_test']} test sequences" + (f"; mean ± sd of {seeds} seeds)" if seeds > 1 else ")")
        for run_seed, cls in values.get("collapsed", []):  # a collapsed model: say so beside its numbers
            source += f"; ⚠ {'' if run_seed is None or seeds == 1 else f'seed {run_seed} '}predicts class {cls} for every sequence"
        rows.append([html.escape(METHOD_NAMES.get(method, method)), html.escape(source), *cells])
    for paper in paper_rows(name):
        rows.append([html.escape(paper["name"]), html.escape(paper["source"]),
                     *[_fmt(paper[k], 3 if k in ("acc", "auc_ovr") else 2) if paper.get(k) is not None else "—" for k in METRICS]])
    if not rows:
        return ""
    return _html_table(pd.DataFrame(rows, columns=["method", "source", *[METRIC_COLUMNS[k] for k in METRICS]]))


def _html_table(frame: pd.DataFrame) -> str:
    """A metrics table without the columns that apply to none of its rows (all "—")."""
    frame = frame.loc[:, [c for c in frame.columns if not (frame[c] == "—").all()]]
    return frame.to_html(index=False, classes="counts metrics", border=0, escape=False)


def paired_table(metrics: dict | None) -> str:
    """Each method minus LVDR in AUC and MAE, with the paired-bootstrap 95% interval (same patients drawn for both)."""
    rows = []
    for method, values in (metrics or {}).get("methods", {}).items():
        paired = values.get("vs_lvdr")
        if not paired:
            continue
        cells = []
        for key in PAIRED:
            d = paired.get(key)
            if d is None:
                cells.append("—")
                continue
            excludes_zero = d["ci_low"] is not None and (d["ci_low"] > 0 or d["ci_high"] < 0)
            cells.append(f"{d['diff']:+.3f} [{_fmt(d['ci_low'], 3)}, {_fmt(d['ci_high'], 3)}]"
                         + (" <b>*</b>" if excludes_zero else ""))
        rows.append([html.escape(METHOD_NAMES.get(method, method)), *cells])
    if not rows:
        return ""
    return _html_table(pd.DataFrame(rows, columns=["method", *[f"{METRIC_COLUMNS[k][:-2]} minus LVDR's" for k in PAIRED]]))


def ablation_verdicts(task: str, methods: dict) -> list[str]:
    """One plain sentence per LVDR ablation: does it beat LVDR on the task's main metric, and is the
    difference larger than the seeds' spread? The report must not leave a reader to find that out."""
    key, lower, label = ("mae_ord", True, "MAE") if task == "ordinal" else ("auc_bin", False, "AUC")
    base = methods.get("lvdr", {}).get(key, {})
    sentences = []
    for method, values in methods.items():
        mine = values.get(key, {})
        if not method.startswith("lvdr_") or base.get("value") is None or mine.get("value") is None:
            continue
        a, b = base["value"], mine["value"]
        spread = max(base.get("sd", 0.0), mine.get("sd", 0.0))
        name = METHOD_NAMES.get(method, method)
        if (b < a) if lower else (b > a):
            verdict = f"{name} does better than LVDR on this run ({label} {b:.3f} against {a:.3f})"
            verdict += (": what it removes does not help here." if abs(a - b) > spread else
                        f", within the seeds' spread (sd {spread:.3f}): what it removes is not shown to help here.")
        else:
            verdict = f"LVDR does better than {name} ({label} {a:.3f} against {b:.3f})"
            verdict += ("." if abs(a - b) > spread else f", but within the seeds' spread (sd {spread:.3f}).")
        sentences.append(verdict)
    return sentences


def dataset_section(name: str, folder: Path, cfg: dict, results: Path) -> dict:
    meta_path = folder / "prepare.json"
    if not meta_path.exists():
        raise DataError(f"{folder}: not prepared (no prepare.json); run `lvdr prepare {name}` first")
    meta = read_json(meta_path)
    table = pd.read_parquet(folder / "slices.parquet")
    slices = np.load(folder / "slices.npy", mmap_mode="r")
    sequences = table.drop_duplicates("seq_id")
    return {
        "name": name,
        "title": TITLES.get(name, name),
        "meta": meta,
        "counts": counts_table(sequences),
        "lengths": figures.sequence_lengths(sequences, f"{name}: sequence length") if sequences.n_slices.max() > 1 else None,
        "montage": figures.montage(slices, table, cfg["report"]["montage_per_grade"], cfg["seed"],
                                   f"{name}: central slice of example sequences per grade"),
        "length_summary": sequences.n_slices.describe()[["min", "50%", "max"]].astype(int).to_dict(),
        **model_figures(name, results / name, cfg["seed"]),
    }


CURVES = {"diffae": "DiffAE (noise-prediction loss)", "densenet121": "DenseNet121 (training loss)",
          "lvdr/seed{seed}": "LVDR's PRM (total loss, eq. 4; first seed)"}


def model_figures(name: str, folder: Path, seed: int) -> dict:
    """Training curves, DiffAE reconstructions and the metric table, for whatever stages have run."""
    out = {"curves": [], "recon": None, "metrics": None}
    for model, label in CURVES.items():
        model = model.format(seed=seed)
        if (folder / model / "curve.csv").exists():
            out["curves"].append((label, figures.training_curve(pd.read_csv(folder / model / "curve.csv"), f"{name}: {label}")))
    if (folder / "diffae" / "reconstructions.npz").exists():
        with np.load(folder / "diffae" / "reconstructions.npz") as arrays:
            out["recon"] = figures.reconstructions(dict(arrays), f"{name}: DiffAE reconstructions of test slices")
    out["explain"] = read_json(folder / "explain" / "summary.json") if (folder / "explain" / "summary.json").exists() else None
    if out["explain"]:
        out["explain_figures"] = [figures.png_uri(folder / "explain" / f) for f in out["explain"]["figures"]]
    metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else None
    out["metrics"] = metrics_table(name, metrics)
    out["paired"] = paired_table(metrics)
    out["ablations"] = ablation_verdicts(metrics["task"], metrics["methods"]) if metrics else []
    return out


def write(cfg: dict, prepared: Path, results: Path, out: Path) -> Path:
    sections = [dataset_section(name, prepared / name, cfg, results) for name in cfg["datasets"]]
    env = jinja2.Environment(loader=jinja2.PackageLoader("lvdr.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    html = env.get_template("report.html.j2").render(
        sections=sections, version=__version__, seed=cfg["seed"],
        created=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    with atomic_path(out) as tmp:
        tmp.write_text(html)
    log.info("report written to %s (%.0f kB)", out, out.stat().st_size / 1024)
    return out
