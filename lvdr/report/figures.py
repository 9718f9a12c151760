"""Report figures, rendered to PNG bytes for embedding."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SPLIT_ORDER = ["train", "val", "test"]


def to_data_uri(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_uri(path) -> str:
    """A PNG written by another stage, embedded as it is."""
    with open(path, "rb") as fh:
        return "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")


def sequence_lengths(sequences: pd.DataFrame, title: str) -> str:
    """Histogram of slices per sequence, one colour per split."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    lengths = sequences.n_slices
    discrete = lengths.nunique() <= 40
    sns.histplot(sequences, x="n_slices", hue="split", hue_order=[s for s in SPLIT_ORDER if s in set(sequences.split)],
                 multiple="stack", discrete=discrete, ax=ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("slices per sequence (T)")
    ax.set_ylabel("sequences")
    ax.set_title(title)
    sns.despine(fig)
    return to_data_uri(fig)


def montage(slices: np.ndarray, table: pd.DataFrame, per_grade: int, seed: int, title: str) -> str:
    """Rows: grades; columns: the central slice of randomly chosen sequences of that grade."""
    rng = np.random.default_rng(seed)
    sequences = table.drop_duplicates("seq_id")
    grades = sorted(sequences.grade.unique())
    fig, axes = plt.subplots(len(grades), per_grade, figsize=(1.3 * per_grade, 1.4 * len(grades)), squeeze=False)
    for r, grade in enumerate(grades):
        ids = sequences.seq_id[sequences.grade == grade].to_numpy()
        chosen = rng.choice(ids, min(per_grade, len(ids)), replace=False)
        for c in range(per_grade):
            ax = axes[r, c]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c >= len(chosen):
                continue
            rows = table[table.seq_id == chosen[c]]
            row = rows.iloc[len(rows) // 2]
            image = np.asarray(slices[int(row["row"])], dtype=np.float32)
            if image.shape[0] == 3:
                ax.imshow(np.moveaxis(image, 0, -1).clip(0, 1))
            else:
                ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            if c == 0:
                ax.set_ylabel(f"grade {grade}", rotation=0, ha="right", va="center")
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return to_data_uri(fig)


def training_curve(curve: pd.DataFrame, title: str, y: str = "loss") -> str:
    """Per-step loss (faint) and its running mean, on a log scale."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    ax.plot(curve.step, curve[y], color="tab:blue", alpha=0.25, lw=0.8, label="per step")
    window = max(1, len(curve) // 30)
    ax.plot(curve.step, curve[y].rolling(window, min_periods=1).mean(), color="tab:blue", lw=2,
            label=f"mean of {window} steps")
    if "val_loss" in curve:
        val = curve.dropna(subset=["val_loss"])
        ax.plot(val.step, val.val_loss, "o-", color="tab:orange", lw=1.5, ms=4, label="validation")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(y)
    ax.set_title(title)
    ax.legend(frameon=False)
    sns.despine(fig)
    return to_data_uri(fig)


def reliability(methods: dict, names: dict, title: str) -> str | None:
    """Reliability diagram of every method's binary score: share of positives against mean score per
    bin (marker area: sequences in the bin), the diagonal being perfect calibration; ECE in the legend."""
    shown = {m: v for m, v in methods.items() if v.get("reliability", {}).get("n")}
    if not shown:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfectly calibrated")
    for method, values in shown.items():
        r = values["reliability"]
        ece = values.get("ece_bin", {}).get("value")
        label = names.get(method, method) + ("" if ece is None else f" (ECE {ece:.3f})")
        line, = ax.plot(r["mean_p"], r["frac_pos"], "-", lw=1.2, alpha=0.8)
        ax.scatter(r["mean_p"], r["frac_pos"], s=12 + 200 * np.asarray(r["n"]) / max(sum(r["n"]), 1),
                   color=line.get_color(), edgecolors="k", lw=0.3, label=label)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean predicted probability (binary score, per bin)")
    ax.set_ylabel("share of positive sequences")
    ax.set_title(title, fontsize=10)
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    sns.despine(fig)
    return to_data_uri(fig)


def reconstructions(arrays: dict, title: str) -> str:
    """Rows: originals, DDIM reconstruction through (z, x_T), decode of z from fresh noise."""
    rows = [("original", "original"), ("ddim", "DDIM(z, x_T)"), ("fresh_noise", "z + fresh noise")]
    n = len(arrays["original"])
    fig, axes = plt.subplots(3, n, figsize=(1.3 * n, 4.2), squeeze=False)
    for r, (key, label) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            image = np.asarray(arrays[key][c], dtype=np.float32)
            if image.shape[0] == 3:
                ax.imshow(np.moveaxis(image, 0, -1).clip(0, 1))
            else:
                ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(title, y=1.0)
    fig.tight_layout()
    return to_data_uri(fig)


def reconstruction_error(arrays: dict) -> dict:
    """MSE and PSNR (images in [0, 1]) of each reconstruction against its original, beside the error
    of the plainest guess (every original replaced by the shown originals' mean image); a stage 1
    that does no better than that guess has learned nothing to reconstruct from."""
    original = np.asarray(arrays["original"], dtype=np.float64)

    def score(guess):
        mse = float(np.mean((np.asarray(guess, dtype=np.float64) - original) ** 2))
        return {"mse": mse, "psnr": float(10 * np.log10(1.0 / max(mse, 1e-12)))}

    out = {key: score(arrays[key]) for key in ("ddim", "fresh_noise") if key in arrays}
    out["mean_image"] = score(np.broadcast_to(original.mean(0, keepdims=True), original.shape))
    out["no_better_than_guess"] = "ddim" in out and out["ddim"]["mse"] >= out["mean_image"]["mse"]
    return out
