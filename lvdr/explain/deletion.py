"""A deletion test of faithfulness: removing the slices where the trajectory moved most should change
the prediction more than removing as many random slices (or the slices where any scan's steps are largest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

from lvdr.explain.plots import GRADE_COLOURS, plt, save_figure
from lvdr.explain.trajectories import as_sequence, step_sizes, typical_steps

def deletion_test(trajs: list[dict], model_path, latents_dir, fraction: float, repeats: int, seed: int,
                  profile: np.ndarray | None = None) -> dict:
    """Faithfulness of the step sizes: delete the largest-step slices, or as many random ones, and re-run the PRM.

    The effect on a sequence is how much its prediction changes: the total variation distance between
    its class probabilities from all of its slices and from those left (``shift_*``). A step size has no
    sign: the paper reads a large step as a slice with strong *or conflicting* evidence, and deleting a
    conflicting slice raises the predicted class's probability. So the test asks whether the largest
    steps mark the slices the decision depends on, either way, more than random slices do; a one-sided
    Wilcoxon signed-rank test over sequences says how sure that is. The signed reading, the drop in the
    predicted class's probability (``drop_*``: do the largest steps mostly support the decision?), is
    reported beside it. The first slice has no step and is never deleted. With ``profile``
    (``step_profile`` of the training trajectories) the same is asked against deleting the slices at
    the indices where the model usually moves most: do this scan's own largest steps matter more than
    the places where any scan's do?
    """
    from lvdr.data import load_latents
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
    drop = kept[:, :1] - kept  # the signed drop in P(predicted class), per run
    shift = 0.5 * np.abs(probs[:, :1] - probs).sum(-1)  # total variation from the full sequence's prediction
    out = {"n_sequences": len(trajs), "fraction": fraction, "repeats": repeats, "mean_k": float(np.mean(counts)),
           "predicted_classes": sorted(int(c) for c in np.unique(predicted)),
           "per_sequence": {"grade": [tr["grade"] for tr in trajs]}}
    for name, effect in (("shift", shift), ("drop", drop)):
        top, random = effect[:, 1], effect[:, 2 + usual:].mean(1)
        out.update({f"{name}_top": float(top.mean()), f"{name}_random": float(random.mean()),
                    f"p_{name}": _greater(top - random)})
        out["per_sequence"].update({f"{name}_top": top.round(5).tolist(), f"{name}_random": random.round(5).tolist()})
        if usual:
            out.update({f"{name}_usual": float(effect[:, 2].mean()), f"p_{name}_usual": _greater(top - effect[:, 2])})
            out["per_sequence"][f"{name}_usual"] = effect[:, 2].round(5).tolist()
    out["top_beats_random"] = float(np.mean(shift[:, 1] > shift[:, 2 + usual:].mean(1)))
    return out


def _greater(differences: np.ndarray) -> float | None:
    """One-sided Wilcoxon signed-rank p that the differences are positive (None when all are zero)."""
    return float(wilcoxon(differences, alternative="greater").pvalue) if np.any(differences != 0) else None


def deletion_figure(result: dict, path: Path, title: str) -> None:
    per = result["per_sequence"]
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    grades = np.asarray(per["grade"])
    for grade in np.unique(grades):  # one colour and legend entry per grade: grades are discrete
        ax.scatter(np.asarray(per["shift_random"])[grades == grade], np.asarray(per["shift_top"])[grades == grade],
                   color=GRADE_COLOURS[int(grade) % len(GRADE_COLOURS)], s=22, edgecolors="k", lw=0.3, label=f"grade {grade}")
    high = max(*per["shift_random"], *per["shift_top"], 1e-3)
    ax.plot([0, high], [0, high], color="0.5", ls="--", lw=1, label="no better than random")
    ax.set_xlabel("change after deleting random slices (mean)")
    ax.set_ylabel("change after deleting the largest steps")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8, loc="upper left")
    save_figure(fig, path)
