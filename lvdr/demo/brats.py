"""BraTS-style demo: skull-stripped FLAIR volumes and segmentations in BraTS 2021 naming.

Edema (label 2) is FLAIR-hyperintense tissue around a tumour core (necrosis 1, enhancing
rim 4). It spans only part of the volume, so axial slabs far from the tumour are
edema-free. A share of the cases has no edema at all: half of those are healthy, half have
a small core without surrounding edema, so "any lesion" is not a shortcut to the label.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lvdr.demo.noise import smooth_noise
from lvdr.volumes import write_nifti

log = logging.getLogger(__name__)


def _ellipsoid(grid, centre, radii):
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))


def _render_case(rng, shape, spacing, edema: bool, core: bool):
    grid = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    extent = np.asarray(shape) * np.asarray(spacing)
    centre = extent / 2 + rng.normal(0, 2, 3)
    centre[2] = extent[2] * 0.45
    radii = np.asarray([0.40, 0.44, 0.42]) * extent * rng.uniform(0.93, 1.05, 3)
    shape_noise = 0.08 * smooth_noise(rng, shape, 8)
    r_brain = _ellipsoid(grid, centre, radii) + shape_noise
    brain = r_brain < 1
    flair = np.where(r_brain > 0.72, 0.62, 0.50) + 0.04 * smooth_noise(rng, shape, 3)  # cortex / white matter
    for side in (-1, 1):  # lateral ventricles: CSF is dark on FLAIR
        vent = _ellipsoid(grid, centre + [side * 0.09 * radii[0], -0.05 * radii[1], 0.05 * radii[2]],
                          [0.07 * radii[0], 0.35 * radii[1], 0.22 * radii[2]]) < 1
        flair[vent] = 0.12
    seg = np.zeros(shape, np.uint8)
    if core or edema:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        where = centre + direction * radii * rng.uniform(0.25, 0.5)
        core_r = rng.uniform(6, 13) if edema else rng.uniform(4, 7)
        r_core = _ellipsoid(grid, where, [core_r] * 3) + 0.15 * smooth_noise(rng, shape, 4)
        if edema:
            edema_r = core_r + rng.uniform(8, 22)
            r_ed = _ellipsoid(grid, where, edema_r * rng.uniform(0.75, 1.25, 3)) + 0.25 * smooth_noise(rng, shape, 5)
            oedema = (r_ed < 1) & brain
            flair[oedema] = 0.88 + 0.05 * smooth_noise(rng, shape, 2)[oedema]
            seg[oedema] = 2
        tumour = (r_core < 1) & brain
        flair[tumour] = 0.66
        seg[tumour] = 4
        necrosis = (r_core < 0.45) & brain
        flair[necrosis] = 0.30
        seg[necrosis] = 1
    bias = 1 + 0.15 * smooth_noise(rng, shape, 10)
    flair = np.clip(flair * bias + rng.normal(0, 0.025, shape), 0.01, None) * rng.uniform(200, 800)
    flair[~brain] = 0.0
    seg[~brain] = 0
    return flair.astype(np.float32), seg


def generate(out_dir: str | Path, cfg: dict, seed: int) -> dict:
    """Write BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,seg}.nii.gz case folders."""
    out_dir = Path(out_dir)
    demo = cfg["demo"]
    rng = np.random.default_rng([seed, 102])
    n = demo["n_cases"]
    n_negative = int(round(demo["no_edema_fraction"] * n))
    negative = set(rng.choice(n, n_negative, replace=False).tolist())
    for i in tqdm(range(n), desc="demo brats", unit="case"):
        edema = i not in negative
        flair, seg = _render_case(rng, tuple(demo["shape"]), demo["spacing_mm"], edema, edema or rng.random() < 0.5)
        case = f"BraTS2021_{i:05d}"
        write_nifti(out_dir / case / f"{case}_flair.nii.gz", flair, demo["spacing_mm"])
        write_nifti(out_dir / case / f"{case}_seg.nii.gz", seg, demo["spacing_mm"])
    log.info("demo brats: %d cases (%d without edema) in %s", n, n_negative, out_dir)
    return {"n_cases": n, "n_without_edema": n_negative}
