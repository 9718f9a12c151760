"""BraTS: read a registered download from a folder (BraTS 2021, BraTS 2023, MSD Task01) or make the demo.

BraTS cannot be downloaded without registration, so fetch only lists the cases of a folder
the user points at and records, per case, the FLAIR file, the segmentation and how edema is
labelled in that release.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

from lvdr.errors import DataError

log = logging.getLogger(__name__)

# layout -> (FLAIR suffix, segmentation suffix, edema label, FLAIR channel of a 4D image)
LAYOUTS = {
    "brats2021": ("_flair.nii.gz", "_seg.nii.gz", 2, None),   # labels 1 necrosis, 2 edema, 4 enhancing
    "brats2023": ("-t2f.nii.gz", "-seg.nii.gz", 2, None),     # labels 1 NETC, 2 SNFH (edema), 3 ET
    "msd": (".nii.gz", ".nii.gz", 1, 0),                      # labels 1 edema, 2 non-enhancing, 3 enhancing
}


def detect_layout(root: Path) -> str:
    if (root / "imagesTr").is_dir() and (root / "labelsTr").is_dir():
        return "msd"
    if next(root.rglob("*-t2f.nii.gz"), None):
        return "brats2023"
    if next(root.rglob("*_flair.nii.gz"), None):
        return "brats2021"
    raise DataError(
        f"{root}: no BraTS cases found (looked for MSD imagesTr/+labelsTr/, BraTS 2023 *-t2f.nii.gz "
        "and BraTS 2021 *_flair.nii.gz)"
    )


def patient_of(case_id: str) -> str:
    """Patient id of a case: BraTS 2023 names timepoints (BraTS-GLI-00000-001), older releases do not."""
    match = re.match(r"BraTS-[A-Z]+-(\d+)-\d+$", case_id)
    return match.group(1) if match else case_id


def list_cases(root: Path, layout: str) -> tuple[list[dict], list[dict]]:
    flair_suffix, seg_suffix, _, _ = LAYOUTS[layout]
    cases, skipped = [], []
    if layout == "msd":
        images = sorted(p for p in (root / "imagesTr").glob("*.nii.gz") if not p.name.startswith("."))
        pairs = [(p.name.removesuffix(".nii.gz"), p, root / "labelsTr" / p.name) for p in images]
    else:
        flairs = sorted(p for p in root.rglob(f"*{flair_suffix}") if not p.name.startswith("."))
        pairs = [(p.name.removesuffix(flair_suffix), p, p.with_name(p.name.removesuffix(flair_suffix) + seg_suffix))
                 for p in flairs]
    for case_id, flair, seg in pairs:
        if not seg.is_file():
            log.warning("BraTS case %s: no segmentation (%s); skipped, its edema label is unknown", case_id, seg)
            skipped.append({"case_id": case_id, "reason": f"no segmentation {seg}"})
            continue
        cases.append({"case_id": case_id, "patient": patient_of(case_id), "flair": flair, "seg": seg})
    if not cases:
        raise DataError(f"{root}: no usable BraTS case (every case lacks a segmentation)")
    return cases, skipped


def listing_digest(cases: list[dict]) -> str:
    """A fingerprint of a BraTS folder without reading gigabytes: sha256 of every case's file names and sizes."""
    lines = [f"{c['case_id']} {p.name} {p.stat().st_size}" for c in cases for p in (c["flair"], c["seg"])]
    return f"sha256 of {len(lines)} file names and sizes {hashlib.sha256(chr(10).join(lines).encode()).hexdigest()[:16]}"


def fetch(cfg: dict, out_dir: Path, seed: int) -> dict:
    from lvdr.fetch import make_demo, user_folder

    source = cfg["source"]
    root = make_demo("brats", cfg, out_dir, seed) if source == "demo" else user_folder("brats", cfg)
    layout = detect_layout(root) if cfg["layout"] == "auto" else cfg["layout"]
    cases, skipped = list_cases(root, layout)
    _, _, edema_label, channel = LAYOUTS[layout]
    log.info("BraTS %s layout in %s: %d cases, %d skipped", layout, root, len(cases), len(skipped))
    return {"dataset": "brats", "source": source, "root": root, "layout": layout, "edema_label": edema_label,
            "flair_channel": channel, "cases": cases, "skipped": skipped, "checksums": {"listing": listing_digest(cases)}}
