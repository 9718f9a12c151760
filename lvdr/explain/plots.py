"""What every explanation figure shares: the grade colours, the choice of sequences shown, and saving."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lvdr.files import atomic_path  # noqa: E402

GRADE_COLOURS = plt.get_cmap("tab10").colors


def pick(trajs: list[dict], per_grade: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    chosen = []
    for grade in sorted({t["grade"] for t in trajs}):
        pool = [t for t in trajs if t["grade"] == grade]
        chosen += [pool[i] for i in sorted(rng.choice(len(pool), min(per_grade, len(pool)), replace=False))]
    return chosen


def save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)




def show(ax, image: np.ndarray, **kwargs) -> None:
    """One stored slice (C x H x W in [0, 1]; grey or RGB) on an axis without ticks."""
    image = np.asarray(image, dtype=np.float32)
    ax.imshow(np.moveaxis(image, 0, -1) if image.shape[0] == 3 else image[0], cmap="gray", vmin=0, vmax=1, **kwargs)
    ax.set_xticks([]), ax.set_yticks([])
