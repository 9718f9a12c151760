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
from lvdr import config as configs
from lvdr.errors import DataError
from lvdr.files import atomic_path, read_json
from lvdr.evaluate.metrics import METRICS, PAIRED
from lvdr.evaluate.paper import paper_rows
from lvdr.report import figures, provenance
from lvdr.report.provenance import data_source
from lvdr.vlm import MODES, parse_method

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


def method_label(method: str) -> str:
    """A method's name in the report: the fixed ones, and Qwen2.5-VL's per size and mode (qwen3b_zeroshot)."""
    if method in METHOD_NAMES:
        return METHOD_NAMES[method]
    qwen = parse_method(method)
    return method if qwen is None else f"Qwen2.5-VL {qwen[0].upper()}, {MODES[qwen[1]]}"


def vlm_rows(folder: Path, metrics: dict | None) -> list[dict]:
    """Per Qwen method: the model, what it was shown, and how many written answers the strict parser could
    not read (its scores come from the grade tokens' logits whatever it wrote)."""
    rows = []
    for method in (metrics or {}).get("methods", {}):
        path = folder / method / "summary.json"
        if parse_method(method) and path.exists():
            s = read_json(path)
            agree = s.get("parsed_equals_top_score")
            rows.append({"method": method_label(method), "model": s["model"],
                         "view": f"{s['view']} ({s['image_size']} px)", "unparseable": f"{s['unparseable']} of {s['answers']} "
                         f"({100 * s['unparseable_share']:.0f}%)", "agree": "—" if agree is None else f"{100 * agree:.0f}%"})
    return rows


def _fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


METRIC_COLUMNS = {"auc_bin": "AUC (bin) ↑", "f1_bin": "F1 (bin) ↑", "mae_ord": "MAE (ord) ↓", "f1_ord": "F1 (ord) ↑",
                  "balanced_acc": "balanced acc. ↑", "acc": "ACC ↑", "auc_ovr": "AUC (macro one-vs-rest) ↑",
                  "ece_bin": "ECE (bin) ↓"}


def temperature_rows(metrics: dict | None) -> list[dict]:
    """Per method: the ECE of the binary score before and after temperature scaling, and each run's T."""
    rows = []
    for method, values in (metrics or {}).get("methods", {}).items():
        t = values.get("temperature")
        if t:
            rows.append({"method": method_label(method), "before": _fmt(t["ece_before"]),
                         "after": _fmt(t["ece_after"]), "T": ", ".join(_temperature(x, b) for x, b in zip(t["per_run"], t["at_bound"]))})
    return rows


def _temperature(t: float, bound: bool) -> str:
    """T, marked where the fit stopped at a bound (validation separated perfectly: the likelihood only
    rises as T falls, so the number is the bound's, not a measurement)."""
    return f"{t:.2f}" + (" (at the fit's bound)" if bound else "")


def metrics_table(metrics: dict | None) -> str:
    """This run's measured rows, each with its bootstrap 95% interval; a metric that applies to no row
    of this dataset (ordinal metrics of a binary task) gets no column."""
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
        constant = dict(values.get("constant_score", []))

        def who(run_seed) -> str:
            return "" if run_seed is None or seeds == 1 else f"seed {run_seed} "

        for run_seed, cls in values.get("collapsed", []):  # a collapsed model: say so beside its numbers
            source += f"; ⚠ {who(run_seed)}predicts grade {cls} for every sequence"
            if run_seed in constant:  # why its binary F1 can still look fine: one score, one side of the threshold
                source += (f" and gives every one the same binary score {constant.pop(run_seed):.3f} (so AUC 0.5 and every "
                           "binary prediction the same)")
        for run_seed, p in constant.items():
            source += f"; ⚠ {who(run_seed)}gives every sequence the same binary score {p:.3f}"
        rows.append([html.escape(method_label(method)), html.escape(source), *cells])
    if not rows:
        return ""
    return _html_table(pd.DataFrame(rows, columns=["method", "source", *[METRIC_COLUMNS[k] for k in METRICS]]))


def reference_table(name: str, measured: dict | None) -> str:
    """The published rows (the LVDR paper's table, MedMNIST v2's benchmark), each name marked with
    where it was published, in the columns of the measured table (or those the references fill)."""
    rows = []
    for paper in paper_rows(name):
        label = paper["name"].replace(" (Ours)", "")
        label += " (paper)" if paper["source"].startswith("paper") else " (MedMNIST v2)"
        rows.append([html.escape(label), html.escape(paper["source"]),
                     *[_fmt(paper[k], 3 if k in ("acc", "auc_ovr") else 2) if paper.get(k) is not None else "—" for k in METRICS]])
    if not rows:
        return ""
    keep = [k for k in METRICS if any(k in v for v in (measured or {}).get("methods", {}).values())] or list(METRICS)
    frame = pd.DataFrame(rows, columns=["published result", "source", *[METRIC_COLUMNS[k] for k in METRICS]])
    frame = frame[["published result", "source", *[METRIC_COLUMNS[k] for k in METRICS if k in keep]]]
    return _html_table(frame)


def metrics_caption(name: str, meta: dict, source_kind: str, prm: dict | None = None, diffae: dict | None = None) -> list[str]:
    """What a reader must know before comparing this dataset's rows, in the dataset's own terms."""
    out = []
    stage1 = (diffae or {}).get("seeds", 1)
    if stage1 > 1 and prm and name in prm.get("datasets", []):
        out.append(f"Stage 1 was trained {stage1} times here (diffae.seeds): each LVDR "
                   "seed reads the latents of its own DiffAE, and DiffAE + LR and + SVM are fitted on each, so their ± holds the "
                   "spread over stage-1 models as well as their own.")
    beyond = {"lambda_step": "L_step, the grading loss on every intermediate state z_t",
              "lambda_move": "L_move, the mean step length ||P_t - P_(t-1)|| from the start P_0, which keeps the memory still where a slice "
                             "changes nothing it holds"}
    terms = [f"{what}, weight {prm[key]:g} (prm.{key})" for key, what in beyond.items()
             if prm and prm.get(key, 0) > 0 and name in prm.get("datasets", [])]
    if terms:
        out.append(f"LVDR's PRM was trained with {'a term' if len(terms) == 1 else 'terms'} beyond the paper's objective "
                   f"(eq. 4): {'; '.join(terms)}. Setting {'it' if len(terms) == 1 else 'them'} to 0 gives the paper's "
                   "objective alone.")
    if prm and name in prm.get("datasets", []) and prm.get("head", "linear") != "linear":
        anchored, readout = prm["head"] == "anchored", prm.get("trajectory") == "readout"
        out.append("LVDR grades with an ordinal head beyond the paper's linear one (prm.head: " + prm["head"] + "): one score "
                   "along a direction of z, with ordered cut-points" + (", measured from the start state, which reads as the "
                   "lowest class, so each higher class lies further along that direction from where every path starts" if anchored
                   else "") + "." + (" P_t is the graded latent less the start's, z_t - z_0 (prm.trajectory: readout), not the "
                   "mean of the slots. The ||P_t|| reading below therefore follows from how this model grades, once it grades "
                   "well: its check tests that the graded direction, and not the others, sets how far a path travels; the step "
                   "size, deletion and centroid checks do not follow from it." if anchored and readout else ""))
    if source_kind == "demo":
        out.append("Measured on generated demo data: these rows show that every stage runs and learns. They are not "
                   "comparable with the published rows below, which were measured on the real data.")
    if name == "spider":
        out.append("The paper's DiffAE and DenseNet121 rows are Atad et al.'s, computed from hard predictions on "
                   "SPIDER's validation split; ours use probabilities on the test split (SPIDER's official validation "
                   "subset, as the paper's own rows). Binary: grade &gt; 0.")
    elif name == "brats":
        level = meta.get("label_level", "volume")
        out.append("Binary: edema present. "
                   + ("Measured per volume, as the paper reports." if level == "volume" else
                      "Measured per slab of consecutive slices (brats.prepare.label_level: slab), while the paper "
                      "reports per volume: the unit differs, and so do the class balance and the number of test items."))
    elif name == "retinamnist":
        out.append("One image per case (T = 1), on the official RetinaMNIST test split. MedMNIST v2's rows are that "
                   "benchmark's published multi-class accuracy and macro one-vs-rest AUC, the metrics medmnist's "
                   "Evaluator computes (our ACC and AUC (macro one-vs-rest) columns).")
    return out


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
        rows.append([html.escape(method_label(method)), *cells])
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
        name = method_label(method)
        if round(a, 3) == round(b, 3):  # level at the printed precision: neither "does better"
            verdict = (f"LVDR and {name} score the same on this run ({label} {a:.3f}): what it removes is not "
                       "shown to help here.")
        elif (b < a) if lower else (b > a):
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
    source = data_source(name, meta, cfg["data_seed"])
    table = pd.read_parquet(folder / "slices.parquet")
    slices = np.load(folder / "slices.npy", mmap_mode="r")
    sequences = table.drop_duplicates("seq_id")
    return {
        "name": name,
        "title": TITLES.get(name, name),
        "meta": meta,
        "source": source,
        "counts": counts_table(sequences),
        "lengths": figures.sequence_lengths(sequences, f"{name}: sequence length") if sequences.n_slices.max() > 1 else None,
        "montage": figures.montage(slices, table, cfg["report"]["montage_per_grade"], cfg["seed"],
                                   f"{name}: central slice of example sequences per grade"),
        "length_summary": sequences.n_slices.describe()[["min", "50%", "max"]].astype(int).to_dict(),
        **model_figures(name, results / name, cfg["seed"], meta, source["kind"], cfg.get("prm"), cfg.get("diffae")),
    }


CURVES = {"diffae/seed{seed}": "DiffAE (noise-prediction loss; first seed)", "densenet121/seed{seed}": "DenseNet121 (training loss; first seed)",
          "lvdr/seed{seed}": "LVDR's PRM (total loss, eq. 4; first seed)"}


def model_figures(name: str, folder: Path, seed: int, meta: dict, source_kind: str, prm: dict | None = None,
                  diffae: dict | None = None) -> dict:
    """Training curves, DiffAE reconstructions and the metric table, for whatever stages have run."""
    out = {"curves": [], "recon": None, "metrics": None}
    for model, label in CURVES.items():
        model = model.format(seed=seed)
        if (folder / model / "curve.csv").exists():
            out["curves"].append((label, figures.training_curve(pd.read_csv(folder / model / "curve.csv"), f"{name}: {label}")))
    recon = folder / "diffae" / f"seed{seed}" / "reconstructions.npz"
    if recon.exists():
        with np.load(recon) as arrays:
            arrays = dict(arrays)
            out["recon"] = figures.reconstructions(arrays, f"{name}: DiffAE reconstructions of test slices")
            out["recon_error"] = figures.reconstruction_error(arrays)
    out["explain"] = read_json(folder / "explain" / "summary.json") if (folder / "explain" / "summary.json").exists() else None
    if out["explain"]:
        runs = out["explain"]["runs"]  # a summary from before it named its checks: their keys head the columns
        out["explain"].setdefault("checks", [(key, key) for key in ((runs[0].get("verdicts") if runs else None) or {})])
        out["explain_figures"] = [figures.png_uri(folder / "explain" / f) for f in out["explain"]["figures"]]
    out["decoded"] = read_json(folder / "decoded" / "summary.json") if (folder / "decoded" / "summary.json").exists() else None
    if out["decoded"]:
        out["decoded_figures"] = {f: figures.png_uri(folder / "decoded" / f) for f in out["decoded"]["figures"]}
    out["bundle"] = read_json(folder / "bundle" / "manifest.json") if (folder / "bundle" / "manifest.json").exists() else None
    metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else None
    out["metrics"] = metrics_table(metrics)
    out["reliability"] = figures.reliability(metrics["methods"], {m: method_label(m) for m in metrics["methods"]},
                                             f"{name}: calibration of the binary score (test)") if metrics else None
    out["temperature"] = temperature_rows(metrics)
    out["vlm"] = vlm_rows(folder, metrics)
    out["reference"] = reference_table(name, metrics)
    out["caption"] = metrics_caption(name, meta, source_kind, prm, diffae)
    out["paired"] = paired_table(metrics)
    out["ablations"] = ablation_verdicts(metrics["task"], metrics["methods"]) if metrics else []
    return out


def write(cfg: dict, prepared: Path, results: Path, out: Path, config_files: list[str] | None = None,
          logs: Path = Path("logs")) -> Path:
    """The report; it names its build time and the run's job times, so it differs on every build
    (DVC keeps it out of its cache: dvc.yaml)."""
    sections = [dataset_section(name, prepared / name, cfg, results) for name in cfg["datasets"]]
    env = jinja2.Environment(loader=jinja2.PackageLoader("lvdr.report", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]))
    facts = provenance.collect(cfg, configs.dump(cfg), config_files or [], logs, {s["name"]: s["meta"] for s in sections})
    html = env.get_template("report.html.j2").render(
        sections=sections, version=__version__, seed=cfg["seed"], data_seed=cfg["data_seed"], provenance=facts,
        demo=[s for s in sections if s["source"]["kind"] == "demo"],
        created=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )
    with atomic_path(out) as tmp:
        tmp.write_text(html)
    log.info("report written to %s (%.0f kB)", out, out.stat().st_size / 1024)
    return out
