"""The paper's three readings of a reasoning trajectory (3.4), as numbers with figures.

(a) PCA of the states P_t, fitted on the training trajectories; test paths coloured by slice
index, first and last states marked, each grade's centroid (mean training state) as a star; and
the test of what the figure is read for: do the paths end at their own grade's centroid, head for
it as they read, and do the centroids lie in the order of the grades?
(b) ||P_t|| against t, by grade. (c) Step sizes ||P_t - P_{t-1}|| beside a filmstrip of the
slices, and the rank correlation between step size and the slice's recorded evidence (the share of
its disc's nucleus a demo SPIDER slice shows, the edema area for BraTS): do large steps happen where the
evidence is, and do they still among the steps taken at the same point of a sequence?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import binomtest, rankdata, spearmanr, wilcoxon
from scipy.stats import t as student_t
from sklearn.decomposition import PCA

from lvdr.explain.plots import plt, save_figure, show

def load_trajectories(path: str | Path) -> list[dict]:
    """Every sequence's saved trajectory: P_t, z_t (None in files from before it was saved), the rows read, depths."""
    with np.load(path) as f:
        a = {k: f[k] for k in f.files}  # each access of an npz member reads it again: read once
    cut = lambda key, i: a[key][a["offsets"][i]:a["offsets"][i + 1]]  # noqa: E731
    return [{"seq_id": str(a["seq_id"][i]), "split": str(a["split"][i]), "grade": int(a["grade"][i]), "P": cut("P", i),
             "z": cut("z", i) if "z" in a else None, "row": cut("row", i), "depth": cut("depth", i)}
            for i in range(len(a["offsets"]) - 1)]


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


def _steps_and_evidence(trajs: list[dict], evidence: np.ndarray):
    """Every step's size, its index in its sequence and the evidence of the slice it read, where recorded."""
    sizes, index, values = [], [], []
    for tr in trajs:
        if len(tr["P"]) > 1:
            steps = step_sizes(tr["P"])
            sizes.append(steps)
            index.append(np.arange(len(steps)))
            values.append(evidence[tr["row"][1:]])
    if not sizes:
        return np.zeros(0), np.zeros(0, int), np.zeros(0)
    sizes, index, values = np.concatenate(sizes), np.concatenate(index), np.concatenate(values)
    ok = np.isfinite(values)
    return sizes[ok], index[ok], values[ok]


def evidence_correlation(trajs: list[dict], evidence: np.ndarray) -> dict:
    """Spearman correlation, over all steps of the given trajectories, of step size and slice evidence."""
    sizes, _, values = _steps_and_evidence(trajs, evidence)
    if len(values) < 3 or np.ptp(values) == 0:
        return {"rho": None, "p": None, "n_steps": int(len(values))}
    rho, p = spearmanr(sizes, values)
    return {"rho": float(rho), "p": float(p), "n_steps": int(len(values))}


def evidence_correlation_within_index(trajs: list[dict], evidence: np.ndarray) -> dict:
    """The step size/evidence rank correlation at a fixed point of a sequence (a partial Spearman
    correlation given the step index): both ranks are centred within each step index, then correlated.

    A recurrent memory's steps shrink as it settles, and the evidence often sits at the same places in
    every scan (a disc's nucleus in its central sagittal slices), so the raw correlation can come from
    where a slice lies; this one asks whether, among steps at the same index, the larger ones read the
    slices that show more. ``within`` is the part of the evidence's rank variance found within an index:
    near 0, every sequence holds its evidence at the same places and the test has nothing to compare.
    """
    sizes, index, values = _steps_and_evidence(trajs, evidence)
    out = {"rho": None, "p": None, "n_steps": int(len(values)), "within": None}
    if len(values) < 3 or np.ptp(values) == 0:
        return out
    rs, rv = rankdata(sizes), rankdata(values)
    total = float(((rv - rv.mean()) ** 2).sum())
    for i in np.unique(index):
        at = index == i
        rs[at] -= rs[at].mean()
        rv[at] -= rv[at].mean()
    out["within"] = float((rv ** 2).sum() / total)
    df = len(values) - len(np.unique(index)) - 1  # one mean removed per index
    if df < 1 or not rs.any() or not rv.any():
        return out
    rho = float(np.clip(rs @ rv / np.sqrt((rs @ rs) * (rv @ rv)), -1.0, 1.0))
    t = rho * np.sqrt(df / max(1.0 - rho ** 2, 1e-300))
    out.update(rho=rho, p=float(2 * student_t.sf(abs(t), df)))
    return out


def grade_centroids(trajs: list[dict]) -> dict[int, np.ndarray]:
    """Each grade's mean state over every step of the given (training) trajectories: the paper's "trajectory
    centroids ... computed over the training set" (3.4), the PCA figure's stars and the centroid check's reference."""
    return {g: np.concatenate([t["P"] for t in trajs if t["grade"] == g]).mean(0) for g in sorted({t["grade"] for t in trajs})}


def centroid_approach(train: list[dict], test: list[dict]) -> dict:
    """Do the test paths end at their own grade's centroid and head for it (paper 3.4: "the final latent state
    lies close to the label-specific semantic reference embedding")? Measured in the full state space, where
    the PCA plane only displays it. A sequence's margin at a state: the distance to the nearest other grade's
    centroid minus the distance to its own (> 0: its own is the nearest). Tests: the nearest centroid's grade
    at the last state against the true grade, above the agreement chance gives (binomial; chance: the sum
    over grades of P(true grade) P(nearest grade)); the margin's rise from the first state to the last
    (one-sided Wilcoxon signed-rank: each path against itself, so it asks whether reading the slices took it
    towards its own grade's centroid rather than towards the others'); and, with three grades or more, the
    centroids' order (Spearman of their pairwise distances against the grade gap)."""
    centres = grade_centroids(train)
    seqs = [t for t in test if t["grade"] in centres and len(t["P"]) > 1]
    if len(centres) < 2 or not seqs:
        return {"n_sequences": 0}
    grades = np.array(list(centres))
    C = np.stack(list(centres.values()))

    def margin(state, grade):
        d = np.linalg.norm(C - state, axis=1)
        return float(d[grades != grade].min() - d[grades == grade][0]), int(grades[d.argmin()])

    first = np.array([margin(t["P"][0], t["grade"])[0] for t in seqs])
    last, nearest = map(np.array, zip(*(margin(t["P"][-1], t["grade"]) for t in seqs)))
    truth = np.array([t["grade"] for t in seqs])
    chance = float(sum(np.mean(truth == g) * np.mean(nearest == g) for g in grades))
    hits = int((nearest == truth).sum())
    rise = last - first
    out = {"n_sequences": len(seqs), "agreement": hits / len(seqs), "chance": chance,
           "p_agreement": float(binomtest(hits, len(seqs), min(chance, 1.0), alternative="greater").pvalue),
           "margin_first": float(first.mean()), "margin_last": float(last.mean()),
           "p_rise": float(wilcoxon(rise, alternative="greater").pvalue) if np.any(rise != 0) else 1.0,
           "order_rho": None, "order_p": None}
    if len(grades) >= 3:
        i, j = np.triu_indices(len(grades), 1)
        rho, p = spearmanr(np.abs(grades[i] - grades[j]), np.linalg.norm(C[i] - C[j], axis=1))
        out.update(order_rho=float(rho), order_p=float(p))
    return out


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
    centres = {grade: pca.transform(centre[None])[0] for grade, centre in grade_centroids(train).items()}
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
    save_figure(fig, path)


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
    save_figure(fig, path)


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
            show(img_ax, slices[tr["row"][t]])
            value = evidence[tr["row"][t]]
            img_ax.set_title(f"t={t + 1}" + (f"\nev {value:.0f}" if np.isfinite(value) else ""), fontsize=7)
        axes[2 * s, 0].set_ylabel(f"{tr['seq_id']}\ngrade {tr['grade']}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    save_figure(fig, path)


