"""SPIDER-style demo: T2 sagittal lumbar MRI (.mha), masks and the two metadata tables.

Each disc's look follows its Pfirrmann grade (Pfirrmann et al. 2001): the nucleus goes from
bright and homogeneous (grade 0 here, Pfirrmann I) through inhomogeneous grey to black, the
nucleus/annulus border blurs, and the disc loses height. The nucleus is narrow in the
left-right direction, so only the sagittal slices near it show it (the central ones, unless
``nucleus_offset_mm`` moves it off the disc's centre); lateral slices show annulus and bone. ``demo_evidence.csv`` records each slice's nucleus and disc areas: the
ground truth for how much grade evidence a slice carries (prepare reads the nucleus area as a share of
the disc's largest, since a degenerate disc's nucleus is smaller on every slice).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit
from tqdm import tqdm

from lvdr.demo.noise import smooth_noise
from lvdr.files import atomic_path
from lvdr.volumes import write_mha

log = logging.getLogger(__name__)

OVERVIEW_COLUMNS = (
    "new_file_name,num_vertebrae,num_discs,sex,birth_date,subset,AngioFlag,BodyPartExamined,"
    "DeviceSerialNumber,EchoNumbers,EchoTime,EchoTrainLength,FlipAngle,ImagedNucleus,ImagingFrequency,"
    "InPlanePhaseEncodingDirection,MRAcquisitionType,MagneticFieldStrength,Manufacturer,"
    "ManufacturerModelName,NumberOfPhaseEncodingSteps,PercentPhaseFieldOfView,PercentSampling,"
    "PhotometricInterpretation,PixelBandwidth,PixelSpacing,RepetitionTime,SAR,SamplesPerPixel,"
    "ScanningSequence,SequenceName,SeriesDescription,SliceThickness,SoftwareVersions,SpacingBetweenSlices,"
    "SpecificCharacterSet,TransmitCoilName,WindowCenter,WindowWidth"
).split(",")
GRADING_COLUMNS = [
    "Patient", "IVD label", "Modic", "UP endplate", "LOW endplate", "Spondylolisthesis",
    "Disc herniation", "Disc narrowing", "Disc bulging", "Pfirrman grade",
]
CANAL_LABEL = 100
DISC_LABEL0 = 200

# Per grade 0..4 (Pfirrmann I..V): nucleus T2 signal, its heterogeneity, border blur (mm), disc height factor.
NUCLEUS_SIGNAL = (0.95, 0.78, 0.52, 0.32, 0.16)
HETEROGENEITY = (0.02, 0.10, 0.14, 0.14, 0.08)
BORDER_MM = (0.4, 0.8, 2.0, 3.5, 3.5)
HEIGHT_FACTOR = (1.0, 0.97, 0.88, 0.72, 0.45)
ANNULUS_SIGNAL = 0.16
CENTRAL_HALF_WIDTH_MM = 21.0  # a disc's half-width left-right with a central nucleus
DISC_HALF_WIDTH_MM = (18.0, 23.0)  # its range, drawn per disc, with an offset nucleus
NUCLEUS_HALF_WIDTH_MM = 8.0
GRADE_PRIOR = np.array([286, 341, 418, 291, 184], dtype=float)  # the real SPIDER grade counts


def _sample_grades(rng, n_discs: int) -> np.ndarray:
    """Grades of one spine: a patient-level degeneration tendency, lower discs worse."""
    tendency = rng.normal(0.0, 1.1)
    levels = np.arange(n_discs)[::-1] / max(n_discs - 1, 1)  # 1 for the lowest disc (IVD label 1)
    logits = np.log(GRADE_PRIOR / GRADE_PRIOR.sum())
    grades = []
    for lv in levels:
        shift = tendency + 0.6 * (lv - 0.5)
        p = np.exp(logits + shift * (np.arange(5) - 2) * 0.9)
        grades.append(rng.choice(5, p=p / p.sum()))
    return np.asarray(grades)


def _render_series(rng, grades: np.ndarray, cfg: dict, layout_rng=None):
    """One sagittal T2 volume (x = left-right slices, y = anterior-posterior, z = inferior-superior).

    With ``nucleus_offset_mm``, the discs' half-widths and nucleus positions, and the texture of any disc
    slice beyond the central demo's half-width, come from ``layout_rng``; ``rng`` makes exactly the draws
    it makes for the central demo, so the patients, grades, geometry and noise stay the central demo's
    and only where the nucleus lies (and how wide the disc is) changes."""
    nx, n, px, sx = cfg["n_sagittal"], cfg["in_plane_px"], cfg["in_plane_mm"], cfg["slice_mm"]
    n_discs = len(grades)
    x_mm = (np.arange(nx) - (nx - 1) / 2) * sx + rng.normal(0, 0.6)
    u, v = np.meshgrid(np.arange(n) * px, np.arange(n) * px, indexing="ij")  # u: AP, v: SI (mm)
    fov = n * px

    image = np.zeros((nx, n, n), np.float32)
    mask = np.zeros((nx, n, n), np.uint8)
    evidence = []

    vert_h = rng.uniform(20, 24)  # lumbar vertebral body height (mm)
    disc_h0 = vert_h * rng.uniform(0.38, 0.45)
    heights = disc_h0 * np.asarray([HEIGHT_FACTOR[g] for g in grades]) * rng.uniform(0.93, 1.07, n_discs)
    total = (n_discs + 1) * vert_h + heights.sum()
    z0 = (fov - total) / 2 + rng.normal(0, 2)
    depth = rng.uniform(30, 36)
    u_axis = fov * 0.45 + rng.normal(0, 2)
    curve = rng.uniform(3, 8)

    def centre_u(z):  # lordosis: the column bows anteriorly in its middle
        return u_axis + curve * np.sin(np.pi * np.clip((z - z0) / total, 0, 1))

    body_tissue = 0.30 + 0.06 * smooth_noise(rng, (n, n), 10)
    marrow = 0.46 + 0.05 * smooth_noise(rng, (n, n), 3)
    inside = (u > fov * 0.08) & (u < fov * 0.97)
    z = z0
    # With an offset, each disc's half-width and where its nucleus lies left-right (scoliosis, rotation,
    # asymmetric degeneration) are drawn: the nucleus reaches different points of different discs'
    # slice sequences, so a model's steps can be told apart from the places where they fall.
    # Drawn only when asked for (spider.demo.nucleus_offset_mm), so the default demo stays what it was.
    if cfg.get("nucleus_offset_mm", 0) > 0:
        disc_lat = layout_rng.uniform(*DISC_HALF_WIDTH_MM, n_discs)
        room = disc_lat - NUCLEUS_HALF_WIDTH_MM - 2
        nucleus_x = np.clip(layout_rng.normal(0, cfg["nucleus_offset_mm"], n_discs), -room, room)
    else:
        disc_lat, nucleus_x = np.full(n_discs, CENTRAL_HALF_WIDTH_MM), np.zeros(n_discs)
    spans = []
    for k in range(n_discs + 1):  # vertebra k+1 from the bottom, then disc k+1 above it
        spans.append(("vertebra", k + 1, z, z + vert_h))
        z += vert_h
        if k < n_discs:
            spans.append(("disc", k + 1, z, z + heights[k]))
            z += heights[k]

    for i, xm in enumerate(x_mm):
        img = np.where(inside, body_tissue, 0.02).astype(np.float32)
        msk = np.zeros((n, n), np.uint8)
        # spinal canal: a CSF tube behind the column, narrow left-right
        if abs(xm) < 8:
            cu = centre_u(v) + depth / 2 + 3 + 6
            canal = (np.abs(u - cu) < 5.5 * np.sqrt(1 - (xm / 8) ** 2)) & (v > z0 - 5) & (v < z0 + total + 5)
            img[canal] = 0.9
            msk[canal] = CANAL_LABEL
        for kind, label, lo, hi in spans:
            mid, half_h = (lo + hi) / 2, (hi - lo) / 2
            cu = centre_u(mid)
            if kind == "vertebra":
                lat = 23.0
                if abs(xm) >= lat:
                    continue
                d = depth / 2 * np.sqrt(1 - (xm / lat) ** 2)
                body = (np.abs(u - cu) < d) & (np.abs(v - mid) < half_h - 0.6)
                img[body] = marrow[body]
                rim = body & (np.abs(v - mid) > half_h - 1.8)  # dark endplates
                img[rim] = 0.12
                msk[body] = label
            else:
                g = grades[label - 1]
                lat = disc_lat[label - 1]
                central = abs(xm) < CENTRAL_HALF_WIDTH_MM  # a slice the central demo draws a texture for
                if abs(xm) >= lat:
                    if central:  # a narrower disc: draw the texture anyway, to keep rng in step
                        smooth_noise(rng, (n, n), 1.5)
                    evidence.append((label, i, 0, 0))
                    continue
                d = (depth / 2 + 1.5) * np.sqrt(1 - (xm / lat) ** 2)
                disc = (np.abs(u - cu) < d) & (np.abs(v - mid) < half_h + 0.6)
                # nucleus: an ellipsoid, about a third of the disc's width left-right
                ru = d * 0.55 * np.sqrt(max(1 - ((xm - nucleus_x[label - 1]) / NUCLEUS_HALF_WIDTH_MM) ** 2, 0))
                rv = max(half_h * 0.62, 0.5)
                r = np.sqrt(((u - cu) / max(ru, 1e-3)) ** 2 + ((v - mid) / rv) ** 2) if ru > 0 else np.full_like(u, np.inf)
                weight = expit((1 - r) * max(ru, rv) / BORDER_MM[g])
                texture = HETEROGENEITY[g] * smooth_noise(rng if central else layout_rng, (n, n), 1.5)
                nucleus = NUCLEUS_SIGNAL[g] + texture
                if g == 1:  # intranuclear cleft: a dark horizontal band
                    nucleus = nucleus - 0.25 * (np.abs(v - mid) < 0.7)
                disc_img = ANNULUS_SIGNAL + weight * (nucleus - ANNULUS_SIGNAL)
                img[disc] = disc_img[disc]
                msk[disc] = DISC_LABEL0 + label
                evidence.append((label, i, int((disc & (r < 1)).sum()), int(disc.sum())))
        image[i] = img
        mask[i] = msk

    bias = 1 + 0.25 * smooth_noise(rng, image.shape, 6)
    scale = rng.uniform(300, 1500)
    sigma = 0.025
    clean = np.clip(image * bias, 0, None)
    noisy = np.sqrt((clean + rng.normal(0, sigma, clean.shape)) ** 2 + rng.normal(0, sigma, clean.shape) ** 2)
    return (noisy * scale).astype(np.int16), mask, evidence


def generate(out_dir: str | Path, cfg: dict, seed: int) -> dict:
    """Write images/, masks/, overview.csv, radiological_gradings.csv and demo_evidence.csv."""
    out_dir = Path(out_dir)
    demo = cfg["demo"]
    rng = np.random.default_rng([seed, 101])
    layout_rng = np.random.default_rng([seed, 101, 1])  # the off-centre nuclei's own stream (_render_series)
    n = demo["n_patients"]
    n_val = max(1, round(0.2 * n))
    validation = set(rng.choice(np.arange(1, n + 1), n_val, replace=False).tolist())
    overview, gradings, evidence_rows = [], [], []
    spacing = (demo["slice_mm"], demo["in_plane_mm"], demo["in_plane_mm"])
    for patient in tqdm(range(1, n + 1), desc="demo spider", unit="series"):
        grades = _sample_grades(rng, demo["discs_per_patient"])
        image, mask, evidence = _render_series(rng, grades, demo, layout_rng)
        series = f"{patient}_t2"
        write_mha(out_dir / "images" / f"{series}.mha", image, spacing)
        write_mha(out_dir / "masks" / f"{series}.mha", mask, spacing)
        subset = "validation" if patient in validation else "training"
        for kind in ("t1", "t2"):  # the real overview lists T1 series too; only T2 is used
            row = dict.fromkeys(OVERVIEW_COLUMNS, "")
            row.update(new_file_name=f"{patient}_{kind}", num_vertebrae=len(grades) + 1, num_discs=len(grades),
                       sex=rng.choice(["F", "M"]), subset=subset, BodyPartExamined="LSPINE",
                       MRAcquisitionType="2D", MagneticFieldStrength=1.5, Manufacturer="lvdr demo",
                       PixelSpacing=f"[{demo['in_plane_mm']}, {demo['in_plane_mm']}]",
                       SliceThickness=demo["slice_mm"], SpacingBetweenSlices=demo["slice_mm"])
            overview.append(row)
        for k, g in enumerate(grades, start=1):
            row = dict.fromkeys(GRADING_COLUMNS, 0)
            row.update({"Patient": patient, "IVD label": k, "Pfirrman grade": int(g) + 1,
                        "Disc narrowing": int(g >= 3), "Disc bulging": int(rng.random() < 0.15 * g)})
            gradings.append(row)
        for label, slice_index, nucleus_px, disc_px in evidence:
            evidence_rows.append({"series": series, "IVD label": label, "slice_index": slice_index,
                                  "nucleus_px": nucleus_px, "disc_px": disc_px,
                                  "grade": int(grades[label - 1])})
    tables = {
        "overview.csv": pd.DataFrame(overview, columns=OVERVIEW_COLUMNS),
        "radiological_gradings.csv": pd.DataFrame(gradings, columns=GRADING_COLUMNS),
        "demo_evidence.csv": pd.DataFrame(evidence_rows),
    }
    for name, table in tables.items():
        with atomic_path(out_dir / name) as tmp:
            table.to_csv(tmp, index=False)
    log.info("demo spider: %d series, %d graded discs in %s", n, len(gradings), out_dir)
    return {"n_series": n, "n_discs": len(gradings)}
