"""Counterfactuals along the grade direction (Atad et al. 2024): what would this scan look like a grade away?

The grade direction is the normal of a logistic regression fitted on the training sequences' z_sem
to tell the healthy (grade 0, no edema) from the rest, on z_sem as it is: standardised first, the
direction fell in z_sem's low-variance corners (demo SPIDER: an sd of 0.6 along it against 7.7
unstandardised), where a ridge regression on the grade or LDA also put it, and where the PRM's head
barely looks (moved 10 sds along those, 0-38% of test discs changed grade; along this one 93%). A
test sequence's z_sem moves along it until
the PRM's head predicts a grade one, and where the scale allows two, away; each is decoded from the
sequence's fixed x_T (``decoding.fixed_noise``) beside the reconstruction, which is the
counterfactual at step 0. Validity: re-encoded and graded by the stage-1 latent classifier, the
counterfactual has moved the requested way (its expected grade, or P(positive), against the
reconstruction's). Proximity: the mean absolute pixel change inside and outside the graded region
(the disc, the edema) of the central slice.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression

from lvdr.explain.decoding import decode_latents, grade_images, head_probs, inside_outside
from lvdr.explain.plots import plt, save_figure, show
from lvdr.predictions import decide

MOVES = (1, 2)  # grades away from the predicted one
GRID = 400  # steps along the direction: up to REACH training sds of z_sem's projection on it
REACH = 10


def grade_direction(z_sem: np.ndarray, grades: np.ndarray) -> np.ndarray:
    """Unit vector in z_sem space from the healthy (grade 0) towards the rest (training z_sem, (n, d))."""
    sick = (np.asarray(grades) > 0).astype(int)
    if len(np.unique(sick)) < 2:
        raise ValueError("the grade direction needs training sequences of grade 0 and above")
    w = LogisticRegression(max_iter=5000).fit(z_sem, sick).coef_[0]
    return w / np.linalg.norm(w)


def fit_grade_direction(train: list[dict]) -> tuple[np.ndarray, float]:
    """The grade direction of the training trajectories' z_sem, and the search's step along it (GRID
    steps reach REACH sds of the training z_sem along the direction)."""
    z_sem = np.stack([t["z"][-1] for t in train])
    direction = grade_direction(z_sem, np.array([t["grade"] for t in train]))
    return direction, float((z_sem @ direction).std()) * REACH / GRID


def requested(grade: int, num_classes: int) -> tuple[int, list[int]]:
    """The sign to move a predicted grade in, and the moves (1, 2) that stay on the scale: up from the
    lower half, down from the top, as far as the scale allows."""
    sign = 1 if grade + 1 <= num_classes - 1 and (grade + 2 <= num_classes - 1 or grade == 0) else -1
    return sign, [k for k in MOVES if 0 <= grade + sign * k <= num_classes - 1]


def score(probs: np.ndarray) -> np.ndarray:
    """What a move along the grade should change: the expected grade, or P(positive) for a binary task."""
    return probs[:, 1] if probs.shape[1] == 2 else probs @ np.arange(probs.shape[1])


def search(prm, z_sem: np.ndarray, direction: np.ndarray, step: float, threshold: float | None = None) -> list[dict]:
    """Per sequence, the smallest move alpha * direction (alpha on a grid of GRID steps of ``step``) at
    which the PRM's head predicts each requested grade; None where the grid never reaches it."""
    alphas = step * np.arange(1, GRID + 1)
    out = []
    for z in z_sem:
        now = int(decide(head_probs(prm, z[None]), threshold)[0])
        sign, moves = requested(now, prm.head.out_features)
        along = decide(head_probs(prm, z[None] + sign * alphas[:, None] * direction), threshold)
        found = {}
        for k in moves:
            hit = np.flatnonzero(sign * (along - now) >= k)
            found[k] = None if not len(hit) else float(sign * alphas[hit[0]])
        out.append({"predicted": now, "sign": sign, "alpha": found})
    return out


def counterfactuals(prm, diffae, classifier, trajs: list[dict], x_t, direction: np.ndarray, step: float, cfg: dict,
                    steps: int, masks: np.ndarray | None = None, threshold: float | None = None,
                    recon: np.ndarray | None = None) -> dict:
    """Decode each sequence's counterfactuals; measure validity and proximity. ``masks`` (n, H, W): the graded
    region of each sequence's central slice; ``recon``: the decodes of z_sem from x_T where they are made already
    (``decoded_states``' last images), else they are decoded here."""
    z_sem = np.stack([tr["z"][-1] for tr in trajs])
    found = search(prm, z_sem, direction, step, threshold)
    num_classes = prm.head.out_features
    if recon is None:
        recon = decode_latents(diffae, x_t, z_sem, cfg, steps, desc="decode reconstructions")
    base = score(grade_images(diffae, classifier, num_classes, recon))
    out = {"n_sequences": len(trajs), "step": step, "moves": {}}
    images = {0: recon}
    for k in MOVES:
        todo = [i for i, f in enumerate(found) if f["alpha"].get(k) is not None]
        record = {"n_requested": sum(k in f["alpha"] for f in found), "n_reached": len(todo)}
        if todo:
            moved = z_sem[todo] + np.array([found[i]["alpha"][k] for i in todo])[:, None] * direction
            cf = decode_latents(diffae, x_t[todo], moved, cfg, steps, desc=f"decode counterfactuals ({k} grade away)")
            change = score(grade_images(diffae, classifier, num_classes, cf)) - base[todo]
            valid = np.array([found[i]["sign"] for i in todo]) * change > 0
            record.update(valid_share=float(valid.mean()), n_valid=int(valid.sum()),
                          p=float(binomtest(int(valid.sum()), len(todo), 0.5, alternative="greater").pvalue),
                          mean_alpha=float(np.mean([abs(found[i]["alpha"][k]) for i in todo])))
            change = inside_outside(np.abs(cf - recon[todo]).mean(1), None if masks is None else masks[todo])
            record.update({f"change_{k}": v for k, v in change.items()})
            for i, j in enumerate(todo):
                found[j].setdefault("valid", {})[k] = bool(valid[i])
            images[k] = dict(zip(todo, cf))
        out["moves"][k] = record
    out["per_sequence"] = [{"seq_id": tr["seq_id"], "grade": tr["grade"], **f} for tr, f in zip(trajs, found)]
    out["images"] = images
    return out


def counterfactual_figure(shown: list[int], trajs: list[dict], result: dict, slices: np.ndarray, rows: np.ndarray,
                          path, title: str, known: bool = True) -> None:
    """Per shown sequence: central slice, reconstruction, and for each move the counterfactual and |difference|.
    ``known``: the trajectories' grades are the true ones (else, a new scan's, they are not shown)."""
    cols = 2 + 2 * len(MOVES)
    fig, axes = plt.subplots(len(shown), cols, figsize=(1.35 * cols, 1.55 * len(shown) + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    recon = result["images"][0]
    top = max((float(np.abs(img - recon[j]).max()) for k in MOVES if k in result["images"]
               for j, img in result["images"][k].items() if j in shown), default=1e-6)
    for r, i in enumerate(shown):
        per = result["per_sequence"][i]
        show(axes[r, 0], slices[rows[i]]), axes[r, 0].set_axis_on()
        axes[r, 0].set_title(f"{trajs[i]['seq_id']}" + (f"\ntrue {trajs[i]['grade']}" if known else "\ncentral slice"), fontsize=6)
        show(axes[r, 1], recon[i]), axes[r, 1].set_axis_on()
        axes[r, 1].set_title(f"reconstruction\npredicted {per['predicted']}", fontsize=6)
        for m, k in enumerate(MOVES):
            image = result["images"].get(k, {}).get(i)
            if image is None:
                continue
            target = per["predicted"] + per["sign"] * k
            verdict = "valid" if per.get("valid", {}).get(k) else "not valid"
            show(axes[r, 2 + 2 * m], image), axes[r, 2 + 2 * m].set_axis_on()
            axes[r, 2 + 2 * m].set_title(f"as grade {target}\n({verdict})", fontsize=6)
            ax = axes[r, 3 + 2 * m]
            ax.imshow(np.abs(image - recon[i]).mean(0), cmap="magma", vmin=0, vmax=top)
            ax.set_axis_on(), ax.set_xticks([]), ax.set_yticks([])
            ax.set_title("|difference|", fontsize=6)
    fig.suptitle(title, y=1.0, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
