"""SPIDER: one sequence per graded disc, every sagittal T2 slice through it, in order (Appendix A).

Per series: RAS orientation, resampling, percentile intensity scaling (whole volume), then
for each graded disc the slices its mask touches, a square crop around the disc's centre
and a resize (Atad et al.'s recipe, kept for every slice instead of the central one only).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from monai.transforms import ScaleIntensityRangePercentiles, Spacing

from lvdr.errors import DataError
from lvdr.fetch import provenance, read_manifest
from lvdr.prepare import parallel_map, to_float16, write_prepared
from lvdr.prepare.geometry import resize, square_crop
from lvdr.prepare.splits import holdout_groups
from lvdr.volumes import display, load_volume, to_ras

log = logging.getLogger(__name__)
DISC_LABEL0 = 200
OVERVIEW_NEEDS = ("new_file_name", "subset")
GRADINGS_NEEDS = ("Patient", "IVD label", "Pfirrman grade")


def _read_csv(path: Path, needs) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str)
    except Exception as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from None
    missing = [c for c in needs if c not in table.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return table


def graded_discs(overview: pd.DataFrame, gradings: pd.DataFrame) -> pd.DataFrame:
    """Every gradings row of a patient with a T2 series: series, patient, IVD label, grade, subset.

    Rows whose ``IVD label`` is 0 are kept here (they are rows of the join) and dropped, with a
    warning, by :func:`usable_discs`; gradings of patients without a T2 series never join.
    """
    kind = overview.new_file_name.str.split("_", n=1).str[1]
    t2 = overview.loc[kind == "t2", ["new_file_name", "subset"]].rename(columns={"new_file_name": "series"})
    t2["patient"] = t2.series.str.split("_", n=1).str[0].str.strip()
    bad_subset = ~t2.subset.isin(["training", "validation"])
    if bad_subset.any():
        raise DataError(f"overview.csv: series {', '.join(t2.series[bad_subset])} have a subset other than training/validation")
    grades = gradings.assign(patient=gradings.Patient.str.strip())
    unmatched = sorted(set(grades.patient) - set(t2.patient), key=lambda p: (len(p), p))
    if unmatched:
        log.warning("radiological_gradings.csv: %d patient(s) without a T2 series in overview.csv, their rows skipped: %s",
                    len(unmatched), ", ".join(unmatched))
    joined = t2.merge(grades, on="patient", how="inner")
    joined["ivd_label"] = pd.to_numeric(joined["IVD label"], errors="coerce")
    joined["pfirrmann"] = pd.to_numeric(joined["Pfirrman grade"], errors="coerce")
    return joined[["series", "patient", "subset", "ivd_label", "pfirrmann"]].reset_index(drop=True)


def usable_discs(joined: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """Drop rows that match no disc (IVD label < 1) or carry no valid Pfirrmann grade (1..5)."""
    skipped = []
    bad_label = ~(joined.ivd_label >= 1)
    bad_grade = ~joined.pfirrmann.isin([1, 2, 3, 4, 5])
    for row in joined[bad_label | bad_grade].itertuples():
        why = f"IVD label {row.ivd_label} matches no disc" if bad_label[row.Index] else f"Pfirrmann grade {row.pfirrmann} is not 1..5"
        log.warning("radiological_gradings.csv: patient %s, %s; row skipped", row.patient, why)
        skipped.append({"series": row.series, "ivd_label": row.ivd_label, "reason": why})
    usable = joined[~(bad_label | bad_grade)].copy()
    usable["ivd_label"] = usable.ivd_label.astype(int)
    usable["grade"] = usable.pfirrmann.astype(int) - 1
    return usable.drop(columns="pfirrmann").reset_index(drop=True), skipped


def assign_splits(discs: pd.DataFrame, val_fraction: float, seed: int) -> pd.Series:
    """Official validation -> test; official training -> train/val, stratified by grade, grouped by patient."""
    training = discs.subset == "training"
    val = holdout_groups(discs.patient[training], discs.grade[training], val_fraction, seed)
    split = np.where(~training, "test", np.where(discs.patient.isin(val), "val", "train"))
    return pd.Series(split, index=discs.index)


def _source_slice(raw_affine: np.ndarray, new_affine: np.ndarray, x: int, centre) -> int:
    """Index, along the raw array's left-right axis, of the raw slice a resampled slice came from."""
    world = new_affine @ np.array([x, centre[0], centre[1], 1.0])
    raw = np.linalg.solve(raw_affine, world)
    axis = int(np.argmax(np.abs(raw_affine[0, :3])))
    return int(round(raw[axis]))


def extract_series(task: dict) -> tuple[list[tuple[np.ndarray, pd.DataFrame]], list[dict]]:
    """All graded discs of one series: per disc a (slices, table) pair; plus skipped discs."""
    import torch

    torch.set_num_threads(1)
    cfg = task["cfg"]
    image = load_volume(task["image"], ras=False)
    mask = load_volume(task["mask"], ras=False)
    if image.shape != mask.shape or not np.allclose(image.affine, mask.affine, atol=1e-3):
        raise DataError(f"{task['mask']}: geometry differs from its image {task['image']} "
                        f"(shape {tuple(mask.shape[1:])} vs {tuple(image.shape[1:])})")
    raw_affine = np.asarray(image.affine, dtype=float)
    image, mask = to_ras(image), to_ras(mask)
    if cfg["spacing_mm"]:
        image = Spacing(pixdim=cfg["spacing_mm"], mode="bilinear")(image)
        mask = Spacing(pixdim=cfg["spacing_mm"], mode="nearest")(mask)
    lo, hi = cfg["intensity_percentiles"]
    image = ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=0.0, b_max=1.0, clip=True)(image)
    new_affine = np.asarray(image.affine, dtype=float)
    vol, labels = np.asarray(image[0]), np.rint(np.asarray(mask[0])).astype(np.int32)
    parts, skipped = [], []
    for disc in task["discs"]:
        k = disc["ivd_label"]
        inside = labels == DISC_LABEL0 + k
        per_slice = inside.sum(axis=(1, 2))
        xs = np.flatnonzero(per_slice >= cfg["min_disc_px"])
        if len(xs) == 0:
            why = f"mask has no disc label {DISC_LABEL0 + k} (IVD label {k})"
            skipped.append({"series": task["series"], "ivd_label": k, "reason": why})
            continue
        centre = np.argwhere(inside)[:, 1:].mean(axis=0)
        crops = square_crop(vol[xs], centre, cfg["crop_px"])
        slices = resize(crops, cfg["image_size"])
        slices = np.stack([display(s) for s in slices])[:, None]
        disc_mask = resize(square_crop(inside[xs].astype(np.float32), centre, cfg["crop_px"]), cfg["image_size"]) > 0.5
        source = [_source_slice(raw_affine, new_affine, int(x), centre) for x in xs]
        table = pd.DataFrame({
            "case_id": disc["patient"], "seq_id": f"{task['series']}_ivd{k}", "slice_pos": np.arange(len(xs)),
            "n_slices": len(xs), "split": disc["split"], "grade": disc["grade"], "label_bin": int(disc["grade"] > 0),
            "source_file": task["image_name"], "source_slice": source, "evidence": np.nan, "ivd_label": k,
            "disc_px": per_slice[xs],
        })
        if task["evidence"] is not None:
            table["evidence"] = [task["evidence"].get((k, s), np.nan) for s in source]
        parts.append((to_float16(slices), table, disc_mask))
    return parts, skipped


def prepare(cfg: dict, manifest_path: Path, out_dir: Path, seed: int, workers: int = 1):
    manifest, root = read_manifest(manifest_path)
    pcfg = cfg["prepare"]
    overview = _read_csv(root / manifest["overview"], OVERVIEW_NEEDS)
    gradings = _read_csv(root / manifest["gradings"], GRADINGS_NEEDS)
    joined = graded_discs(overview, gradings)
    discs, skipped = usable_discs(joined)
    images, masks = root / manifest["images"], root / manifest["masks"]
    listed = set(overview.new_file_name)
    for orphan in sorted(p.stem for p in images.glob("*_t2.mha") if p.stem not in listed):
        log.warning("%s: series missing from overview.csv (its subset is unknown); skipped", images / f"{orphan}.mha")
        skipped.append({"series": orphan, "reason": "missing from overview.csv"})
    present = discs.series.map(lambda s: (images / f"{s}.mha").is_file() and (masks / f"{s}.mha").is_file())
    for series in sorted(set(discs.series[~present])):
        log.warning("series %s: listed in overview.csv but %s or its mask is missing; skipped", series, images / f"{series}.mha")
        skipped.append({"series": series, "reason": "image or mask file missing"})
    discs = discs[present].reset_index(drop=True)
    discs["split"] = assign_splits(discs, pcfg["val_fraction"], seed)
    evidence = _read_evidence(root / manifest["evidence"]) if manifest.get("evidence") else {}
    tasks = [
        {"series": series, "evidence": evidence.get(series) if evidence else None, "image": images / f"{series}.mha", "mask": masks / f"{series}.mha",
         "image_name": f"{manifest['images']}/{series}.mha", "cfg": pcfg,
         "discs": group[["patient", "ivd_label", "grade", "split"]].to_dict("records")}
        for series, group in discs.groupby("series", sort=False)
    ]
    parts = []
    for series_parts, series_skipped in parallel_map(extract_series, tasks, workers, "prepare spider"):
        parts.extend(series_parts)
        for item in series_skipped:
            log.warning("series %s: %s; disc skipped", item["series"], item["reason"])
        skipped.extend(series_skipped)
    if not parts:
        raise DataError(f"{root}: no graded disc could be extracted")
    meta = {"data": provenance(manifest, root), "evidence": None, "num_classes": 5, "task": "ordinal", "skipped": skipped,
            "graded_rows": {s: int((joined.subset == s).sum()) for s in ("training", "validation")}}
    if evidence:
        meta["evidence"] = ("share of the disc's nucleus the slice shows: its nucleus area over the disc's largest "
                            "(demo generator's ground truth)")
    return write_prepared(out_dir, "spider", parts, meta)


def _read_evidence(path: Path) -> dict:
    """The demo generator's ground truth, per slice, of how much of its disc's nucleus it shows: the
    slice's nucleus area over the largest of that disc's slices. {series: {(IVD label, raw slice index): share}}.

    Not the area itself: a degenerate disc loses height, so its nucleus is smaller on every slice, and
    the area would rank a grade-IV disc's central slice with a healthy disc's edge. Where the Pfirrmann
    evidence is, the nucleus, is the same at every grade; only what it looks like changes.
    """
    table = pd.read_csv(path)
    need = [c for c in ("series", "IVD label", "slice_index", "nucleus_px") if c not in table.columns]
    if need:
        raise DataError(f"{path}: missing column(s) {', '.join(need)}")
    largest = table.groupby(["series", "IVD label"]).nucleus_px.transform("max")
    table["share"] = (table.nucleus_px / largest.where(largest > 0)).fillna(0.0)
    return {series: {(int(r["IVD label"]), int(r.slice_index)): float(r.share) for _, r in group.iterrows()}
            for series, group in table.groupby("series")}
