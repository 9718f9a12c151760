"""Explain LVDR's decisions through its reasoning trajectories (paper 3.4).

(a) PCA of the states P_t, fitted on the training trajectories; test paths coloured by slice
index, first and last states marked, each grade's centroid (mean training state) as a star.
(b) ||P_t|| against t, by grade. (c) Step sizes ||P_t - P_{t-1}|| beside a filmstrip of the
slices, and the rank correlation between step size and the slice's recorded evidence (the demo
generator's nucleus area for SPIDER, the edema area for BraTS): do large steps happen where the
evidence is, and do they still when each step is measured against the model's typical step at that
point of a sequence? (d) A deletion test of faithfulness: removing the slices where the trajectory moved
most should change the prediction more than removing as many random slices. (e) How sure the model is
(``lvdr.uncertainty``): MC-dropout uncertainty per test sequence, and the accuracy left when the most
uncertain share is referred to a human.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr, wilcoxon  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lvdr.data import load_prepared  # noqa: E402
from lvdr.files import atomic_path, write_csv, write_json  # noqa: E402

log = logging.getLogger(__name__)


def load_trajectories(path: str | Path) -> list[dict]:
    with np.load(path) as f:
        offsets = f["offsets"]
        return [{"seq_id": str(f["seq_id"][i]), "split": str(f["split"][i]), "grade": int(f["grade"][i]),
                 "P": f["P"][offsets[i]:offsets[i + 1]], "row": f["row"][offsets[i]:offsets[i + 1]],
                 "depth": f["depth"][offsets[i]:offsets[i + 1]]}
                for i in range(len(offsets) - 1)]


def as_sequence(tr: dict, keep: np.ndarray | None = None):
    """A saved trajectory as the PRM's input Sequence again, optionally only the slices at ``keep``."""
    from lvdr.prm.train import Sequence

    keep = np.arange(len(tr["row"])) if keep is None else keep
    return Sequence(tr["seq_id"], tr["split"], tr["grade"], -1, tr["row"][keep], tr["depth"][keep])


def step_sizes(P: np.ndarray) -> np.ndarray:
    """||P_t - P_{t-1}|| for t >= 2 (the first state has no predecessor)."""
    return np.linalg.norm(np.diff(P, axis=0), axis=1)


def step_profile(trajs: list[dict]) -> np.ndarray:
    """The median step size at each step index (step t = 2, 3, ...) over the given trajectories: the
    model's typical step at that point of a sequence, whatever the slice shows."""
    by_index: dict[int, list[float]] = {}
    for tr in trajs:
        for i, size in enumerate(step_sizes(tr["P"])):
            by_index.setdefault(i, []).append(size)
    return np.array([np.median(by_index[i]) for i in range(len(by_index))]) if by_index else np.ones(0)


def typical_steps(profile: np.ndarray, n: int) -> np.ndarray:
    """The typical step (``step_profile``) at each of a sequence's n step indices; indices beyond the
    longest training sequence take its last value, and an empty profile gives ones (no adjustment)."""
    return profile[np.minimum(np.arange(n), len(profile) - 1)] if len(profile) else np.ones(n)


def evidence_correlation(trajs: list[dict], evidence: np.ndarray, profile: np.ndarray | None = None) -> dict:
    """Spearman correlation, over all steps of the given trajectories, of step size and slice evidence.

    With ``profile`` (``step_profile`` of the training trajectories) each step is first divided by the
    typical step at its index. A recurrent memory's steps shrink as it settles, and the evidence
    often sits at the same places in every scan (a disc's nucleus in the central sagittal slices), so
    the raw correlation can come from where a slice lies; the profiled one asks whether the model
    moves more than usual at that point of the sequence where the slice shows more.
    """
    sizes, values = [], []
    for tr in trajs:
        if len(tr["P"]) > 1:
            steps = step_sizes(tr["P"])
            if profile is not None:
                steps = steps / np.maximum(typical_steps(profile, len(steps)), 1e-12)
            sizes.append(steps)
            values.append(evidence[tr["row"][1:]])
    if not sizes:
        return {"rho": None, "p": None, "n_steps": 0}
    sizes, values = np.concatenate(sizes), np.concatenate(values)
    ok = np.isfinite(values)
    if ok.sum() < 3 or np.ptp(values[ok]) == 0:
        return {"rho": None, "p": None, "n_steps": int(ok.sum())}
    rho, p = spearmanr(sizes[ok], values[ok])
    return {"rho": float(rho), "p": float(p), "n_steps": int(ok.sum())}


def norm_separation(trajs: list[dict]) -> dict:
    """Does ||P_t|| tell the grades apart (paper 3.4)? Each sequence's mean ||P_t|| over its steps;
    the per-grade means of that, their range, and its Spearman correlation with the grade."""
    if not trajs:
        return {"grade_means": {}, "range": None, "rho": None, "p": None}
    grades = np.array([t["grade"] for t in trajs])
    norms = np.array([np.linalg.norm(t["P"], axis=1).mean() for t in trajs])
    means = {int(g): float(norms[grades == g].mean()) for g in np.unique(grades)}
    rho, p = spearmanr(grades, norms) if len(means) > 1 else (None, None)
    return {"grade_means": means, "range": float(np.ptp(list(means.values()))),
            "rho": None if rho is None else float(rho), "p": None if p is None else float(p)}


def deletion_test(trajs: list[dict], model_path, latents_dir, fraction: float, repeats: int, seed: int,
                  profile: np.ndarray | None = None) -> dict:
    """Faithfulness of the step sizes: delete the largest-step slices, or as many random ones, and re-run the PRM.

    The effect on a sequence is the drop in the probability of the class it predicts from all of
    its slices. The first slice has no step and is never deleted. If the trajectory marks what the
    model used, deleting its largest steps costs more than deleting random slices; a one-sided
    Wilcoxon signed-rank test over sequences says how sure that is. With ``profile``
    (``step_profile`` of the training trajectories) the same is asked against deleting the slices
    at the indices where the model usually moves most: do this scan's own largest steps matter
    more than the places where any scan's do?
    """
    from lvdr.diffae.cache import load_latents
    from lvdr.prm.train import load_prm, run_sequences

    model = load_prm(model_path)
    features = load_latents(latents_dir)  # memory-mapped: only the test sequences' rows are read
    rng = np.random.default_rng([seed, 7])
    trajs = [tr for tr in trajs if len(tr["P"]) >= 3]
    if not trajs:
        return {"n_sequences": 0}

    def without(tr, drop):
        return as_sequence(tr, np.setdiff1d(np.arange(len(tr["P"])), drop))

    usual = profile is not None and len(profile) > 0
    runs, counts = [], []
    for tr in trajs:
        sizes = step_sizes(tr["P"])  # sizes[i] belongs to slice i + 1
        k = max(1, round(fraction * len(sizes)))
        runs += [without(tr, []), without(tr, np.argsort(-sizes, kind="stable")[:k] + 1)]
        if usual:
            runs.append(without(tr, np.argsort(-typical_steps(profile, len(sizes)), kind="stable")[:k] + 1))
        runs += [without(tr, rng.choice(len(sizes), k, replace=False) + 1) for _ in range(repeats)]
        counts.append(k)
    probs = np.stack([r["probs"] for r in run_sequences(model, runs, features, "cpu", latents=False)])
    probs = probs.reshape(len(trajs), 2 + usual + repeats, -1)
    predicted = probs[:, 0].argmax(1)
    kept = probs[np.arange(len(trajs)), :, predicted]  # (sequences, runs per sequence): P(predicted class)
    drop_top, drop_random = kept[:, 0] - kept[:, 1], (kept[:, :1] - kept[:, 2 + usual:]).mean(1)
    out = {"n_sequences": len(trajs), "fraction": fraction, "repeats": repeats, "mean_k": float(np.mean(counts)),
           "predicted_classes": sorted(int(c) for c in np.unique(predicted)),
           "drop_top": float(drop_top.mean()), "drop_random": float(drop_random.mean()),
           "top_beats_random": float(np.mean(drop_top > drop_random)), "p": _greater(drop_top - drop_random),
           "per_sequence": {"grade": [tr["grade"] for tr in trajs], "drop_top": drop_top.round(5).tolist(),
                            "drop_random": drop_random.round(5).tolist()}}
    if usual:
        drop_usual = kept[:, 0] - kept[:, 2]
        out.update(drop_usual=float(drop_usual.mean()), p_usual=_greater(drop_top - drop_usual))
        out["per_sequence"]["drop_usual"] = drop_usual.round(5).tolist()
    return out


def _greater(differences: np.ndarray) -> float | None:
    """One-sided Wilcoxon signed-rank p that the differences are positive (None when all are zero)."""
    return float(wilcoxon(differences, alternative="greater").pvalue) if np.any(differences != 0) else None


def deletion_figure(result: dict, path: Path, title: str) -> None:
    per = result["per_sequence"]
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    grades = np.asarray(per["grade"])
    for grade in np.unique(grades):  # one colour and legend entry per grade: grades are discrete
        ax.scatter(np.asarray(per["drop_random"])[grades == grade], np.asarray(per["drop_top"])[grades == grade],
                   color=GRADE_COLOURS[int(grade) % len(GRADE_COLOURS)], s=22, edgecolors="k", lw=0.3, label=f"grade {grade}")
    low = min(0.0, *per["drop_random"], *per["drop_top"])
    high = max(*per["drop_random"], *per["drop_top"], 1e-3)
    ax.plot([low, high], [low, high], color="0.5", ls="--", lw=1, label="no better than random")
    ax.set_xlabel("drop after deleting random slices (mean)")
    ax.set_ylabel("drop after deleting the largest steps")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    _save(fig, path)


GRADE_COLOURS = plt.get_cmap("tab10").colors


def _pick(trajs: list[dict], per_grade: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    chosen = []
    for grade in sorted({t["grade"] for t in trajs}):
        pool = [t for t in trajs if t["grade"] == grade]
        chosen += [pool[i] for i in sorted(rng.choice(len(pool), min(per_grade, len(pool)), replace=False))]
    return chosen


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def pca_figure(train: list[dict], shown: list[dict], path: Path, title: str) -> None:
    pca = PCA(n_components=2).fit(np.concatenate([t["P"] for t in train]))
    fig, ax = plt.subplots(figsize=(6.2, 5))
    t_max = max(len(t["P"]) for t in shown)
    for tr in shown:
        xy = pca.transform(tr["P"])
        ax.plot(xy[:, 0], xy[:, 1], color="0.75", lw=0.8, zorder=1)
        points = ax.scatter(xy[:, 0], xy[:, 1], c=np.arange(len(xy)), cmap="viridis", vmin=0, vmax=t_max - 1, s=14, zorder=2)
        ax.scatter(*xy[0], marker="o", s=50, facecolors="none", edgecolors="k", zorder=3)
        ax.scatter(*xy[-1], marker="X", s=60, c="k", zorder=3)
    centres = {grade: pca.transform(np.concatenate([t["P"] for t in train if t["grade"] == grade]).mean(0, keepdims=True))[0]
               for grade in sorted({t["grade"] for t in train})}
    middle = np.mean(ax.get_xlim())
    for i, (grade, centre) in enumerate(sorted(centres.items(), key=lambda item: item[1][1])):
        ax.scatter(*centre, marker="*", s=260, c="red", edgecolors="k", zorder=4)
        inward = -1 if centre[0] > middle else 1  # label towards the middle, so it stays inside the axes
        # centroids close together: stagger the labels vertically (in order of height) so they do not overlap
        ax.annotate(f"grade {grade}", centre, xytext=(10 * inward, 12 * (i - (len(centres) - 1) / 2)),
                    textcoords="offset points", color="darkred", fontsize=9, ha="left" if inward > 0 else "right",
                    va="center", arrowprops={"arrowstyle": "-", "color": "darkred", "lw": 0.5},
                    bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7})
    fig.colorbar(points, ax=ax, label="slice index t")
    ax.set_xlabel(f"PC 1 ({pca.explained_variance_ratio_[0]:.0%})")
    ax.set_ylabel(f"PC 2 ({pca.explained_variance_ratio_[1]:.0%})")
    ax.set_title(f"{title}\n○ first state, ✕ last state, ★ grade centroid (training)", fontsize=10)
    _save(fig, path)


def norm_figure(trajs: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5.8, 3.6))
    for grade in sorted({t["grade"] for t in trajs}):
        norms = [np.linalg.norm(t["P"], axis=1) for t in trajs if t["grade"] == grade]
        length = max(len(n) for n in norms)
        padded = np.full((len(norms), length), np.nan)
        for i, n in enumerate(norms):
            padded[i, :len(n)] = n
        mean, sd = np.nanmean(padded, 0), np.nanstd(padded, 0)
        steps = np.arange(1, length + 1)
        ax.plot(steps, mean, label=f"grade {grade} (n={len(norms)})")
        ax.fill_between(steps, mean - sd, mean + sd, alpha=0.15)
    ax.set_xlabel("step t (slices read)")
    ax.set_ylabel("||P_t||")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    _save(fig, path)


def steps_figure(shown: list[dict], slices: np.ndarray, evidence: np.ndarray, path: Path, title: str) -> None:
    """Per sequence: step sizes as bars above the filmstrip of the slices that caused them."""
    n = max(len(t["P"]) for t in shown)
    fig, axes = plt.subplots(2 * len(shown), n, figsize=(0.9 * n, 2.1 * len(shown)), squeeze=False,
                             gridspec_kw={"height_ratios": [1, 1.2] * len(shown)})
    for s, tr in enumerate(shown):
        sizes = np.concatenate([[np.nan], step_sizes(tr["P"])])
        top = np.nanmax(sizes) if np.isfinite(sizes).any() else 1.0
        for t in range(n):
            bar_ax, img_ax = axes[2 * s, t], axes[2 * s + 1, t]
            for ax in (bar_ax, img_ax):
                ax.set_xticks([]), ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
            if t >= len(tr["P"]):
                continue
            if np.isfinite(sizes[t]):
                bar_ax.bar([0], [sizes[t]], color="tab:red", width=0.6)
            bar_ax.set_ylim(0, top * 1.1)
            image = np.asarray(slices[tr["row"][t]], dtype=np.float32)
            img_ax.imshow(np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0], cmap="gray", vmin=0, vmax=1)
            value = evidence[tr["row"][t]]
            img_ax.set_title(f"t={t + 1}" + (f"\nev {value:.0f}" if np.isfinite(value) else ""), fontsize=7)
        axes[2 * s, 0].set_ylabel(f"{tr['seq_id']}\ngrade {tr['grade']}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    _save(fig, path)


CHECKS = ("evidence", "position", "deletion", "deletion_position", "norm", "referral")  # the verdicts, in the report's order
EVIDENCE_P = 0.01  # the step-size/evidence and norm/grade correlations must reach this
DELETION_P = 0.05  # and the deletion test this, one-sided


def _g(x: float) -> str:
    """Two significant figures, without a negative zero."""
    return format(x + 0.0, ".2g")


def verdicts(checks: dict) -> dict:
    """One verdict per reading of a trajectory: (word, sentence), the word one of 'supports',
    'does not support', 'inconclusive' or 'not applicable'. A model that predicts one class for
    every test sequence has no decision to explain, so every check is then not applicable."""
    c, n, d = checks["correlation"], checks["norm"], checks.get("deletion") or {}
    if len(d.get("predicted_classes", [0, 1])) == 1:
        why = (f"the model predicts class {d['predicted_classes'][0]} for every test sequence, so its trajectories "
               "explain no decision")
        return {key: ("not applicable", why) for key in CHECKS}
    out = {}
    if c["rho"] is None:
        out["evidence"] = ("not applicable", "no per-slice evidence is recorded for this dataset")
    elif c["rho"] > 0 and c["p"] < EVIDENCE_P:
        out["evidence"] = ("supports", f"the trajectory moves most on the slices with the most evidence "
                                       f"(ρ = {_g(c['rho'])}, p = {_g(c['p'])}, {c['n_steps']} steps)")
    else:
        out["evidence"] = ("does not support", f"the step size does not rise with the slice's evidence (ρ = {_g(c['rho'])}, "
                                               f"p = {_g(c['p'])}; needs ρ > 0 with p < {EVIDENCE_P})")
    a = checks.get("correlation_position") or {"rho": None}
    if a["rho"] is None:
        out["position"] = ("not applicable", "no per-slice evidence is recorded, or no training trajectory gives the "
                                             "typical step at each point of a sequence")
    elif a["rho"] > 0 and a["p"] < EVIDENCE_P:
        out["position"] = ("supports", f"where a slice shows more, the step is larger than the model's typical step at "
                                       f"that point of a sequence (ρ = {_g(a['rho'])}, p = {_g(a['p'])})")
    else:
        why = (f"relative to the model's typical step at each point of a sequence, the step size does not rise with "
               f"the evidence (ρ = {_g(a['rho'])}, p = {_g(a['p'])}; needs ρ > 0 with p < {EVIDENCE_P})")
        if out["evidence"][0] == "supports":
            why += ": the raw correlation comes from where the evidence slices lie in a sequence, not from what they show"
        out["position"] = ("does not support", why)
    if not d.get("n_sequences"):
        out["deletion"] = ("not applicable", "no test sequence has three or more slices, or the test was not run")
    else:
        effect = (f"deleting the largest steps lowers the predicted class's probability by {_g(d['drop_top'])}, as many "
                  f"random slices by {_g(d['drop_random'])} (Wilcoxon p = {'n/a' if d['p'] is None else _g(d['p'])}, "
                  f"{d['n_sequences']} sequences)")
        if d["drop_top"] > d["drop_random"] and d["p"] is not None and d["p"] < DELETION_P:
            out["deletion"] = ("supports", effect)
        elif d["drop_top"] > d["drop_random"]:
            out["deletion"] = ("inconclusive", effect + f": the mean favours the largest steps, but not at p < {DELETION_P}")
        else:
            out["deletion"] = ("does not support", effect + ": the largest steps matter no more than random slices")
    if d.get("drop_usual") is None:
        out["deletion_position"] = ("not applicable", "the deletion test was not run against the usual positions")
    else:
        effect = (f"deleting this scan's largest steps lowers the predicted class's probability by {_g(d['drop_top'])}, "
                  f"deleting the slices where the model usually moves most by {_g(d['drop_usual'])} "
                  f"(Wilcoxon p = {'n/a' if d['p_usual'] is None else _g(d['p_usual'])})")
        if out["deletion"][0] == "does not support":  # a refinement of the deletion test cannot outdo it
            out["deletion_position"] = ("does not support", effect + "; the largest steps matter no more than "
                                                                      "random slices to begin with")
        elif d["drop_top"] > d["drop_usual"] and d["p_usual"] is not None and d["p_usual"] < DELETION_P:
            out["deletion_position"] = (("supports", effect) if out["deletion"][0] == "supports" else
                                        ("inconclusive", effect + ", but the deletion test itself is inconclusive"))
        elif d["drop_top"] > d["drop_usual"]:
            out["deletion_position"] = ("inconclusive", effect + f": the mean favours the scan's own steps, but not at p < {DELETION_P}")
        else:
            out["deletion_position"] = ("does not support", effect + ": where the steps are large matters no more than "
                                                                      "where they usually are")
    out["referral"] = _referral_verdict(checks.get("referral"))
    if n["rho"] is None:
        out["norm"] = ("not applicable", "the test sequences hold one grade only")
    elif n["p"] < EVIDENCE_P:
        out["norm"] = ("supports", f"a sequence's mean ||P_t|| changes with its grade (ρ = {_g(n['rho'])}, p = {_g(n['p'])})")
    else:
        out["norm"] = ("does not support", f"the mean ||P_t|| does not follow the grade (ρ = {_g(n['rho'])}, "
                                           f"p = {_g(n['p'])}; needs p < {EVIDENCE_P})")
    return out


def _referral_verdict(r: dict | None) -> tuple[str, str]:
    """Does the MC-dropout uncertainty rank the wrong decisions first (one-sided Mann-Whitney, p < DELETION_P)?"""
    if not r:
        return ("not applicable", "the uncertainty was not measured (explain.uncertainty.passes is 0)")
    if r["error_auroc"] is None:
        return ("not applicable", f"the model is {'right' if r['n_wrong'] == 0 else 'wrong'} on every test sequence: "
                                  "there is no error for the uncertainty to find")
    first, last = r["curve"][0], r["curve"][-1]
    effect = (f"accuracy {_g(first['accuracy'])} on all {first['n_kept']} test sequences, {_g(last['accuracy'])} on the "
              f"{last['n_kept']} left when the most uncertain {last['referred']:.0%} are referred; the uncertainty tells its "
              f"{r['n_wrong']} wrong decisions from the right ones with AUROC {_g(r['error_auroc'])} "
              f"(Mann-Whitney p = {_g(r['error_p'])}, {r['passes']} MC-dropout passes)")
    rises = last["accuracy"] > first["accuracy"]  # referring must help, not only rank errors a little higher
    if r["error_auroc"] > 0.5 and r["error_p"] < DELETION_P and rises:
        return ("supports", effect)
    if r["error_auroc"] > 0.5 and rises:
        return ("inconclusive", effect + f": the wrong decisions are more uncertain on average, but not at p < {DELETION_P}")
    return ("does not support", effect + ": the uncertainty does not rank the wrong decisions first")


def run_checks(run: Path, test: list[dict], evidence: np.ndarray, latents, deletion: dict | None, seed: int,
               train: list[dict] | None = None, passes: int = 0) -> dict:
    """The three readings of one trained run's test trajectories (paper 3.4), each a number with its test:
    step size against evidence (Spearman; with ``train`` also relative to the typical step at each point
    of a sequence), the norm profile by grade, and the deletion test."""
    checks = {"run": run.name, "correlation": evidence_correlation(test, evidence), "norm": norm_separation(test)}
    profile = step_profile(train) if train else None
    if train:
        checks["correlation_position"] = evidence_correlation(test, evidence, profile)
    if deletion is not None and (run / "model.pt").exists():
        checks["deletion"] = deletion_test(test, run / "model.pt", latents, seed=seed, profile=profile, **deletion)
    if passes and (run / "model.pt").exists():
        checks["referral"] = referral_check(test, run / "model.pt", latents, passes, seed)
    checks["verdicts"] = verdicts(checks)
    return checks


def referral_check(trajs: list[dict], model_path, latents_dir, passes: int, seed: int) -> dict:
    """``lvdr.uncertainty.referral`` on the test sequences of one trained run, with its stored threshold."""
    import torch

    from lvdr.diffae.cache import load_latents
    from lvdr.prm.train import load_prm
    from lvdr.uncertainty import referral

    threshold = torch.load(model_path, map_location="cpu", weights_only=False).get("threshold")
    return referral(load_prm(model_path), [as_sequence(t) for t in trajs], load_latents(latents_dir), passes, seed, threshold)


def write_plot_data(out_dir: Path, test: list[dict], evidence: np.ndarray, deletion: dict | None) -> None:
    """The first run's step sizes against evidence and its deletion test, as tables for `dvc plots show`
    (header only where there is nothing to plot)."""
    steps = [{"seq_id": t["seq_id"], "grade": t["grade"], "t": i + 2, "step_size": float(size),
              "evidence": float(evidence[t["row"][i + 1]])}
             for t in test for i, size in enumerate(step_sizes(t["P"]))]
    write_csv(out_dir / "steps.csv", pd.DataFrame(steps, columns=["seq_id", "grade", "t", "step_size", "evidence"]))
    per = (deletion or {}).get("per_sequence", {})
    write_csv(out_dir / "deletion.csv", pd.DataFrame({k: per.get(k, []) for k in ("grade", "drop_random", "drop_top")}))


def explain(runs: list[str | Path], prepared_dir: str | Path, out_dir: str | Path, seed: int, per_grade: int = 2,
            latents: str | Path | None = None, deletion: dict | None = None, passes: int = 0) -> dict:
    """Figures of the first run's trajectories and, for every run (one per training seed), the checks
    of ``run_checks``; with ``latents`` and the ``deletion`` settings (config key explain.deletion)
    also the deletion test, and with ``passes`` (explain.uncertainty.passes) the MC-dropout referral
    curve. Each run is a folder holding ``trajectories.npz`` and ``model.pt``."""
    out_dir, runs = Path(out_dir), [Path(r) for r in runs]
    data = load_prepared(prepared_dir)
    evidence = data.table.evidence.to_numpy(dtype=float)
    name = data.meta["dataset"]
    summary = {"dataset": name, "evidence": data.meta.get("evidence"), "figures": [], "runs": []}
    trajs = load_trajectories(runs[0] / "trajectories.npz")
    if max(len(t["P"]) for t in trajs) < 2:
        summary["note"] = "every sequence is a single image (T = 1): there is no trajectory over depth to explain"
        write_plot_data(out_dir, [], evidence, None)
        write_json(out_dir / "summary.json", summary)
        return summary
    test = [t for t in trajs if t["split"] == "test"]
    train = [t for t in trajs if t["split"] == "train"]
    summary["mean_steps"] = float(np.mean([len(t["P"]) for t in test]))
    pca_figure(train, _pick(test, per_grade, seed), out_dir / "pca.png", f"{name}: reasoning trajectories (test)")
    norm_figure(test, out_dir / "norms.png", f"{name}: ||P_t|| by grade (test, mean ± sd)")
    steps_figure(_pick(test, 1, seed), data.slices, evidence, out_dir / "steps.png",
                 f"{name}: step size ||P_t - P_(t-1)|| (bars) and the slice read at step t")
    summary["figures"] = ["pca.png", "norms.png", "steps.png"]
    for i, run in enumerate(tqdm(runs, desc=f"{name}: checks per seed", unit="run", disable=len(runs) < 2)):
        run_trajs = trajs if i == 0 else load_trajectories(run / "trajectories.npz")
        run_test = [t for t in run_trajs if t["split"] == "test"]
        checks = run_checks(run, run_test, evidence, latents, deletion, seed, [t for t in run_trajs if t["split"] == "train"],
                            passes if latents else 0)
        c, n, d = checks["correlation"], checks["norm"], checks.get("deletion")
        a = checks.get("correlation_position") or {"rho": None}
        log.info("%s %s: Spearman rho(step size, evidence) = %s, relative to the typical step at each index %s; "
                 "||P_t|| grade means range %s (rho with grade %s)%s",
                 name, run.name, "n/a" if c["rho"] is None else f"{c['rho']:.3f} (p = {c['p']:.2g}, {c['n_steps']} steps)",
                 "n/a" if a["rho"] is None else f"{a['rho']:.3f} (p = {a['p']:.2g})",
                 "n/a" if n["range"] is None else f"{n['range']:.3f}", "n/a" if n["rho"] is None else f"{n['rho']:.2f}",
                 "" if not d or not d["n_sequences"] else
                 f"; deleting the largest steps lowers P(predicted class) by {d['drop_top']:.3f}, random slices by "
                 f"{d['drop_random']:.3f} (Wilcoxon p = {'n/a' if d['p'] is None else format(d['p'], '.2g')})")
        if i == 0:
            write_plot_data(out_dir, run_test, evidence, d)
            summary.update(correlation=c, norm=n)
            if d and d["n_sequences"]:
                summary["deletion"] = d
                deletion_figure(d, out_dir / "deletion.png",
                                f"{name}: deleting {deletion['fraction']:.0%} of the slices\n(probability of the predicted class)")
                summary["figures"].append("deletion.png")
        if d:
            d = {k: v for k, v in d.items() if k != "per_sequence"}
        if checks.get("referral"):
            log.info("%s %s: %s", name, run.name, checks["verdicts"]["referral"][1])
            checks["referral"] = {k: v for k, v in checks["referral"].items() if k != "per_sequence"}
        summary["runs"].append({**checks, **({"deletion": d} if d else {})})
    curves = {r["run"]: r["referral"]["curve"] for r in summary["runs"] if r.get("referral")}
    if curves:
        referral_figure(curves, out_dir / "referral.png", f"{name}: referring the most uncertain test sequences")
        summary["figures"].append("referral.png")
    write_json(out_dir / "summary.json", summary)
    return summary


def referral_figure(curves: dict, path: Path, title: str) -> None:
    """Accuracy on the sequences kept against the share referred, one line per run (seed)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for run, curve in curves.items():
        ax.plot([100 * c["referred"] for c in curve], [c["accuracy"] for c in curve], marker="o", label=run)
    ax.set_xlabel("most uncertain test sequences referred (%)")
    ax.set_ylabel("accuracy on the rest")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    _save(fig, path)
