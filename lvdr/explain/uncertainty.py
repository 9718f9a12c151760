"""How sure is LVDR? Predictive uncertainty from MC dropout, and what referring the unsure cases buys.

The PRM trains with dropout on its sublayers, dropped slots and stochastic depth. Left on at test
time, they make each pass a draw from an approximate posterior (Gal and Ghahramani 2016); the spread
of N passes' class probabilities is the model's uncertainty about a sequence. The decision itself
stays the deterministic model's (the one every metric is computed from); the uncertainty only ranks
the sequences. The referral curve then asks what a clinic would: if the most uncertain 10, 20, 30% go
to a human, how accurate is the model on the rest? An uncertainty that ranks errors first makes the
curve rise; one that ranks at random leaves it flat (in expectation).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lvdr.explain.plots import plt, save_figure
from lvdr.explain.trajectories import as_sequence

REFERRED = (0.0, 0.1, 0.2, 0.3)  # the shares of test sequences referred, most uncertain first


def predictive_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of the mean class distribution over passes: (passes, n, C) -> (n,)."""
    mean = probs.mean(0)
    return -(mean * np.log(np.clip(mean, 1e-12, None))).sum(1)


@torch.no_grad()
def mc_dropout_probabilities(model, seqs, features, passes: int, seed: int, batch_size: int = 64) -> np.ndarray:
    """Class probabilities of ``passes`` stochastic passes, (passes, n, C), with every dropout of the PRM
    on (train mode, no gradients); seeded, so the same model and seed give the same draws."""
    from lvdr.prm.train import collate

    torch.manual_seed(seed)
    model.train()
    out = np.zeros((passes, len(seqs), model.head.out_features))
    device = next(model.parameters()).device
    for start in range(0, len(seqs), batch_size):
        inputs = collate(seqs[start:start + batch_size], features, device)
        reads = model.read(inputs["tokens"], inputs["depth"], inputs["codes"])  # the same in every pass
        for k in range(passes):
            out[k, start:start + batch_size] = model(**inputs, reads=reads)["logits"].float().softmax(1).cpu().numpy()
    model.eval()
    return out


def referral_curve(correct: np.ndarray, uncertainty: np.ndarray, abs_error: np.ndarray | None = None,
                   referred=REFERRED) -> list[dict]:
    """Accuracy (and, for graded tasks, MAE) on the sequences kept when the most uncertain share is referred.
    Ties in uncertainty are broken by the sequences' order, never by their correctness."""
    order = np.argsort(-np.asarray(uncertainty, float), kind="stable")  # most uncertain first
    n = len(order)
    rows = []
    for share in referred:
        kept = order[int(round(share * n)):]
        row = {"referred": float(share), "n_kept": int(len(kept)),
               "accuracy": float(np.mean(correct[kept])) if len(kept) else None}
        if abs_error is not None:
            row["mae"] = float(np.mean(abs_error[kept])) if len(kept) else None
        rows.append(row)
    return rows


def referral(model, seqs, features, passes: int, seed: int, threshold: float | None = None) -> dict:
    """MC-dropout uncertainty of ``seqs`` and the referral curve of the model's deterministic decisions.

    ``threshold``: the binary decision threshold stored with the model (None: the most probable class).
    Also the AUROC of the uncertainty for telling wrong decisions from right ones (0.5: no better than chance).
    """
    from scipy.stats import mannwhitneyu
    from sklearn.metrics import roc_auc_score

    from lvdr.predictions import decide
    from lvdr.prm.train import run_sequences

    probs = np.stack([r["probs"] for r in run_sequences(model, seqs, features, next(model.parameters()).device,
                                                        latents=False)])
    grades = np.array([s.grade for s in seqs])
    predicted = decide(probs, threshold)
    draws = mc_dropout_probabilities(model, seqs, features, passes, seed)
    uncertainty = predictive_entropy(draws)
    correct = predicted == grades
    graded = probs.shape[1] > 2
    curve = referral_curve(correct, uncertainty, np.abs(predicted - grades) if graded else None)
    both = 0 < correct.sum() < len(correct)  # right and wrong decisions to tell apart
    detects = float(roc_auc_score(~correct, uncertainty)) if both else None
    p = float(mannwhitneyu(uncertainty[~correct], uncertainty[correct], alternative="greater").pvalue) if both else None
    return {"passes": passes, "n_sequences": len(seqs), "n_wrong": int((~correct).sum()), "curve": curve,
            "error_auroc": detects, "error_p": p,
            "mean_entropy": float(uncertainty.mean()),
            "per_sequence": {"seq_id": [s.seq_id for s in seqs], "entropy": uncertainty.round(5).tolist(),
                             "correct": correct.astype(int).tolist()}}


def referral_check(trajs: list[dict], model_path, latents_dir, passes: int, seed: int) -> dict:
    """``referral`` on the test sequences of one trained run, with its stored threshold."""
    from lvdr.data import load_latents
    from lvdr.prm.train import load_prm

    model = load_prm(model_path)
    return referral(model, [as_sequence(t) for t in trajs], load_latents(latents_dir), passes, seed, model.threshold)


def referral_figure(curves: dict, path: Path, title: str) -> None:
    """Accuracy on the sequences kept against the share referred, one line per run (seed)."""
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for run, curve in curves.items():
        ax.plot([100 * c["referred"] for c in curve], [c["accuracy"] for c in curve], marker="o", label=run)
    ax.set_xlabel("most uncertain test sequences referred (%)")
    ax.set_ylabel("accuracy on the rest")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, path)
