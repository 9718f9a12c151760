"""BraTS: axial FLAIR slices inside the brain, edema labels from the segmentation (Appendix A).

``volume`` level: one sequence per case, positive when the case has any edema (the paper;
nearly every real BraTS case is positive). ``slab`` level: runs of consecutive slices,
positive when any slice in the run shows edema, which gives a balanced task. A slice shows
edema when its prepared image (``image_size`` px) has edema in at least ``min_edema_px``
pixels; each slice keeps its edema area in the source volume (voxels) as ``evidence``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from monai.transforms import ScaleIntensityRange

from lvdr.errors import DataError
from lvdr.fetch import provenance, read_manifest, resolve
from lvdr.prepare import parallel_map, to_float16, write_prepared
from lvdr.prepare.geometry import resize, square_crop
from lvdr.prepare.splits import train_val_test
from lvdr.volumes import display, load_volume, to_ras

log = logging.getLogger(__name__)


def foreground(vol: np.ndarray) -> np.ndarray:
    """The brain: voxels that differ from the background value, the most common value on the volume's border.

    Not ``vol > 0``: a z-scored FLAIR (as many BraTS preprocessing pipelines store it) has a
    constant negative background and negative values inside the brain. The border's value works
    for raw, rescaled and z-scored volumes alike, so they prepare to the same slices.
    """
    border = np.concatenate([face.ravel() for axis in range(3) for face in (np.take(vol, 0, axis), np.take(vol, -1, axis))])
    values, counts = np.unique(border, return_counts=True)
    background = values[counts.argmax()]
    return np.abs(vol - background) > 1e-6 * max(1.0, float(np.abs(vol).max()))


def extract_case(task: dict) -> dict:
    """Brain slices of one case with their edema areas, or the reason the case was skipped."""
    import torch

    torch.set_num_threads(1)
    cfg = task["cfg"]
    flair = load_volume(task["flair"], ras=False)
    if task["channel"] is not None:
        if flair.shape[0] <= task["channel"]:
            raise DataError(f"{task['flair']}: expected a 4D image with FLAIR in channel {task['channel']}, got shape {tuple(flair.shape)}")
        flair = flair[task["channel"]:task["channel"] + 1]
    elif flair.shape[0] != 1:
        raise DataError(f"{task['flair']}: expected one 3D FLAIR volume, got {flair.shape[0]} channels of shape "
                        f"{tuple(flair.shape[1:])}")
    flair = to_ras(flair)
    vol = np.asarray(flair[0])
    if task["seg"] is None:  # a new scan to grade: no segmentation, so no edema evidence or mask
        labels = np.full(vol.shape, -1, np.int32)
    else:
        seg = load_volume(task["seg"], ras=False)
        if vol.shape != seg.shape[1:]:
            raise DataError(f"{task['seg']}: shape {tuple(seg.shape[1:])} differs from its FLAIR {vol.shape}")
        labels = np.rint(np.asarray(to_ras(seg)[0])).astype(np.int32)
    brain = foreground(vol)
    if not brain.any():
        return {"case_id": task["case_id"], "skipped": f"{task['flair']}: FLAIR volume is empty (every voxel has the background value)"}
    zs = np.flatnonzero(brain.any(axis=(0, 1)))
    kept = [z for z in range(zs[0], zs[-1] + 1, cfg["slice_step"]) if brain[:, :, z].any()]  # empty slices dropped
    xy = np.argwhere(brain.any(axis=2))
    lo_xy, hi_xy = xy.min(axis=0), xy.max(axis=0)
    side = int((hi_xy - lo_xy).max()) + 1
    lo, hi = np.percentile(vol[brain], cfg["intensity_percentiles"])
    scaled = np.asarray(ScaleIntensityRange(a_min=lo, a_max=max(hi, lo + 1e-6), b_min=0.0, b_max=1.0, clip=True)(vol))
    stack = np.moveaxis(scaled[:, :, kept], 2, 0)
    crops = square_crop(stack, (lo_xy + hi_xy) / 2, side)
    slices = np.stack([display(s) for s in resize(crops, cfg["image_size"])])[:, None]
    in_edema = labels[:, :, kept] == task["edema_label"]
    edema_mask = resize(square_crop(np.moveaxis(in_edema, 2, 0).astype(np.float32), (lo_xy + hi_xy) / 2, side), cfg["image_size"]) > 0.5
    return {"case_id": task["case_id"], "source": task["source"], "slices": to_float16(slices), "z": np.asarray(kept),
            "edema_px": in_edema.sum(axis=(0, 1)), "masks": edema_mask}


def sequences(case: dict, patient: str, cfg: dict) -> list[tuple[np.ndarray, pd.DataFrame]]:
    """Cut one case's slices into labelled sequences (the whole volume, or slabs)."""
    n = len(case["z"])
    # what the models are shown decides: edema that covers a pixel or two of the prepared slice (on one demo draw
    # a test slab with 6 edema voxels on one slice, 1 pixel at 32 px) is a label no model can learn
    has_edema = case["masks"].sum(axis=(1, 2)) >= cfg["min_edema_px"]
    if cfg["label_level"] == "volume":
        runs = [(case["case_id"], slice(0, n))]
    else:
        length = cfg["slab_length"]
        starts = [s for s in range(0, n, length) if n - s >= max(1, length // 2)]
        runs = [(f"{case['case_id']}_slab{j:02d}", slice(s, min(s + length, n))) for j, s in enumerate(starts)]
    parts = []
    for seq_id, run in runs:
        label = int(has_edema[run].any())
        count = run.stop - run.start
        table = pd.DataFrame({
            "case_id": patient, "seq_id": seq_id, "slice_pos": np.arange(count), "n_slices": count,
            "split": "", "grade": label, "label_bin": label, "source_file": case["source"],
            "source_slice": case["z"][run], "evidence": case["edema_px"][run].astype(float),
        })
        parts.append((case["slices"][run], table, case["masks"][run]))
    return parts


def prepare(cfg: dict, manifest_path: Path, out_dir: Path, seed: int, workers: int = 1):
    manifest, root = read_manifest(manifest_path)
    pcfg = cfg["prepare"]
    tasks = [
        {"case_id": c["case_id"], "flair": resolve(c["flair"], manifest_path), "seg": resolve(c["seg"], manifest_path),
         "source": os.path.relpath(resolve(c["flair"], manifest_path), root), "channel": manifest["flair_channel"], "edema_label": manifest["edema_label"], "cfg": pcfg}
        for c in manifest["cases"]
    ]
    patients = {c["case_id"]: c["patient"] for c in manifest["cases"]}
    skipped = list(manifest.get("skipped", []))
    parts = []
    for case in parallel_map(extract_case, tasks, workers, "prepare brats"):
        if "skipped" in case:
            log.warning("BraTS case %s: %s; skipped", case["case_id"], case["skipped"])
            skipped.append({"case_id": case["case_id"], "reason": case["skipped"]})
            continue
        parts.extend(sequences(case, patients[case["case_id"]], pcfg))
    if not parts:
        raise DataError(f"{root}: no BraTS case could be prepared")
    # split by patient, stratified by whether the patient has edema anywhere
    per_patient = pd.concat([p[1] for p in parts]).groupby("case_id").label_bin.max()
    names = dict(zip(per_patient.index, train_val_test(per_patient.index, per_patient.values,
                                                       pcfg["val_fraction"], pcfg["test_fraction"], seed)))
    for _, table, _ in parts:
        table["split"] = table.case_id.map(names)
    meta = {"data": provenance(manifest, root), "evidence": "edema voxels in the slice (from the segmentation)",
            "num_classes": 2, "task": "binary", "label_level": pcfg["label_level"], "layout": manifest["layout"],
            "skipped": skipped}
    return write_prepared(out_dir, "brats", parts, meta)
