"""Explain LVDR's decisions: one small module per kind of explanation, and ``explain`` (`lvdr explain`),
which runs the trajectory checks for every trained run (one per seed) and writes the figures and
``summary.json``; ``visualise`` (`lvdr decode`) does the same for the decoded images.

- ``trajectories``: the paper's readings of P_1..P_T (PCA paths and the grade centroids, norm profile, step
  size vs evidence)
- ``deletion``: does deleting the largest-step slices change the prediction more than random ones?
- ``uncertainty``: MC-dropout uncertainty per sequence and the referral curve
- ``decoding``: the reasoning states z_t decoded into images, graded again by re-encoding; stochastic decodes
- ``counterfactuals``: z_sem moved along the grade direction, decoded, checked for validity and proximity
- ``verdicts``: what each check's number says, in one word and a sentence
- ``plots``: what the figures share
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lvdr.data import load_prepared
from lvdr.explain.deletion import deletion_figure, deletion_test
from lvdr.explain.plots import pick
from lvdr.explain.trajectories import (centroid_approach, evidence_correlation, evidence_correlation_within_index,
                                       load_trajectories, norm_figure, norm_separation, pca_figure, step_profile, step_sizes,
                                       steps_figure)
from lvdr.explain.uncertainty import referral_check, referral_figure
from lvdr.explain.verdicts import CHECKS, every_seed, norm_across_seeds, verdicts
from lvdr.files import write_csv, write_json

log = logging.getLogger(__name__)


def run_checks(run: Path, test: list[dict], evidence: np.ndarray, latents, deletion: dict | None, seed: int,
               train: list[dict] | None = None, passes: int = 0) -> dict:
    """The three readings of one trained run's test trajectories (paper 3.4), each a number with its test:
    step size against evidence (Spearman, over all steps and among the steps at each point of a
    sequence), the norm profile by grade, the deletion test and, with ``train``, the paths against
    the training grade centroids (the PCA figure's reading)."""
    checks = {"run": run.name, "correlation": evidence_correlation(test, evidence),
              "correlation_position": evidence_correlation_within_index(test, evidence), "norm": norm_separation(test)}
    profile = step_profile(train) if train else None
    if train:
        checks["centroid"] = centroid_approach(train, test)
    if deletion is not None and (run / "model.pt").exists():
        checks["deletion"] = deletion_test(test, run / "model.pt", latents, seed=seed, profile=profile, **deletion)
    if passes and (run / "model.pt").exists():
        checks["referral"] = referral_check(test, run / "model.pt", latents, passes, seed)
    checks["verdicts"] = verdicts(checks)
    return checks


def write_plot_data(out_dir: Path, test: list[dict], evidence: np.ndarray, deletion: dict | None) -> None:
    """The first run's step sizes against evidence and its deletion test, as tables for `dvc plots show`
    (header only where there is nothing to plot)."""
    steps = [{"seq_id": t["seq_id"], "grade": t["grade"], "t": i + 2, "step_size": float(size),
              "evidence": float(evidence[t["row"][i + 1]])}
             for t in test for i, size in enumerate(step_sizes(t["P"]))]
    write_csv(out_dir / "steps.csv", pd.DataFrame(steps, columns=["seq_id", "grade", "t", "step_size", "evidence"]))
    per = (deletion or {}).get("per_sequence", {})
    write_csv(out_dir / "deletion.csv", pd.DataFrame({k: per.get(k, []) for k in ("grade", "shift_random", "shift_top",
                                                                                 "drop_random", "drop_top")}))


def explain(runs: list[str | Path], prepared_dir: str | Path, out_dir: str | Path, seed: int, per_grade: int = 2,
            latents: str | Path | list | None = None, deletion: dict | None = None, passes: int = 0) -> dict:
    """Figures of the first run's trajectories and, for every run (one per training seed), the checks
    of ``run_checks``; with ``latents`` (the cache every run read, or a list: the one each read) and the
    ``deletion`` settings (config key explain.deletion) also the deletion test, and with ``passes``
    (explain.uncertainty.passes) the MC-dropout referral curve. Each run is a folder holding
    ``trajectories.npz`` and ``model.pt``."""
    out_dir, runs = Path(out_dir), [Path(r) for r in runs]
    caches = list(latents) if isinstance(latents, (list, tuple)) else [latents] * len(runs)
    if len(caches) != len(runs):
        raise ValueError(f"{len(caches)} latent caches for {len(runs)} runs")
    data = load_prepared(prepared_dir)
    evidence = data.table.evidence.to_numpy(dtype=float)
    name = data.meta["dataset"]
    summary = {"dataset": name, "evidence": data.meta.get("evidence"), "figures": [], "runs": [],
               "checks": list(CHECKS.items())}  # pairs, as JSON keeps a list's order and not a mapping's
    trajs = load_trajectories(runs[0] / "trajectories.npz")
    if max(len(t["P"]) for t in trajs) < 2:
        summary["note"] = "every sequence is a single image (T = 1): there is no trajectory over depth to explain"
        write_plot_data(out_dir, [], evidence, None)
        write_json(out_dir / "summary.json", summary)
        return summary
    test = [t for t in trajs if t["split"] == "test"]
    train = [t for t in trajs if t["split"] == "train"]
    summary["mean_steps"] = float(np.mean([len(t["P"]) for t in test]))
    pca_figure(train, pick(test, per_grade, seed), out_dir / "pca.png", f"{name}: reasoning trajectories (test)")
    norm_figure(test, out_dir / "norms.png", f"{name}: ||P_t|| by grade (test, mean ± sd)")
    steps_figure(pick(test, 1, seed), data.slices, evidence, out_dir / "steps.png",
                 f"{name}: step size ||P_t - P_(t-1)|| (bars) and the slice read at step t")
    summary["figures"] = ["pca.png", "norms.png", "steps.png"]
    for i, run in enumerate(tqdm(runs, desc=f"{name}: checks per seed", unit="run", disable=len(runs) < 2)):
        run_trajs = trajs if i == 0 else load_trajectories(run / "trajectories.npz")
        run_test = [t for t in run_trajs if t["split"] == "test"]
        checks = run_checks(run, run_test, evidence, caches[i], deletion, seed, [t for t in run_trajs if t["split"] == "train"],
                            passes if caches[i] else 0)
        c, n, d = checks["correlation"], checks["norm"], checks.get("deletion")
        a = checks.get("correlation_position") or {"rho": None}
        log.info("%s %s: Spearman rho(step size, evidence) = %s, among the steps at the same index %s; "
                 "||P_t|| grade means range %s (rho with grade %s)%s",
                 name, run.name, "n/a" if c["rho"] is None else f"{c['rho']:.3f} (p = {c['p']:.2g}, {c['n_steps']} steps)",
                 "n/a" if a["rho"] is None else f"{a['rho']:.3f} (p = {a['p']:.2g}, {a['within']:.0%} of the evidence's "
                                                f"variation within an index)",
                 "n/a" if n["range"] is None else f"{n['range']:.3f}", "n/a" if n["rho"] is None else f"{n['rho']:.2f}",
                 "" if not d or not d["n_sequences"] else
                 f"; deleting the largest steps changes the prediction by {d['shift_top']:.3f}, random slices by "
                 f"{d['shift_random']:.3f} (Wilcoxon p = {'n/a' if d['p_shift'] is None else format(d['p_shift'], '.2g')}; "
                 f"P(predicted class) drops by {d['drop_top']:.3f} against {d['drop_random']:.3f})")
        if i == 0:
            write_plot_data(out_dir, run_test, evidence, d)
            summary.update(correlation=c, norm=n)
            if d and d["n_sequences"]:
                summary["deletion"] = d
                deletion_figure(d, out_dir / "deletion.png",
                                f"{name}: deleting {deletion['fraction']:.0%} of the slices\n(total variation of the class probabilities)")
                summary["figures"].append("deletion.png")
        if d:
            d = {k: v for k, v in d.items() if k != "per_sequence"}
        log.info("%s %s: centroids: %s; %s", name, run.name, *(checks["verdicts"][k][1] for k in ("centroid", "order")))
        if checks.get("referral"):
            log.info("%s %s: %s", name, run.name, checks["verdicts"]["referral"][1])
            checks["referral"] = {k: v for k, v in checks["referral"].items() if k != "per_sequence"}
        summary["runs"].append({**checks, **({"deletion": d} if d else {})})
    summary["across_seeds"] = {"norm": norm_across_seeds([r["norm"] for r in summary["runs"]]),
                               **{k: every_seed([r["verdicts"][k] for r in summary["runs"]]) for k in ("centroid", "order")}}
    curves = {r["run"]: r["referral"]["curve"] for r in summary["runs"] if r.get("referral")}
    if curves:
        referral_figure(curves, out_dir / "referral.png", f"{name}: referring the most uncertain test sequences")
        summary["figures"].append("referral.png")
    write_json(out_dir / "summary.json", summary)
    return summary


