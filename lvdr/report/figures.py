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
