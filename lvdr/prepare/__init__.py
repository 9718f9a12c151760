"""Prepare: raw data -> the slice array and slice table every later stage reads.

Output (DESIGN.md, "Prepared slices"): ``slices.npy`` (N x C x H x W float16 in [0, 1],
row-aligned with the table), ``slices.parquet`` (one row per slice, ``COLUMNS``) and
``prepare.json`` (counts, skipped items with reasons, what ``evidence`` measures); where the
labels come from a segmentation, also ``masks.npy`` (N x H x W uint8, 1 inside the region the
label is about: the graded disc, the edema), cropped and resized like the slices, so that an
explanation can say whether it changed the image there or elsewhere.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lvdr.files import atomic_path, write_json, write_table

log = logging.getLogger(__name__)

COLUMNS = [
    "row", "dataset", "case_id", "seq_id", "slice_pos", "n_slices", "split", "grade", "label_bin",
    "source_file", "source_slice", "evidence",
]
SPLITS = ("train", "val", "test")


def write_prepared(out_dir: str | Path, dataset: str, parts: list[tuple[np.ndarray, pd.DataFrame]], meta: dict) -> pd.DataFrame:
    """Concatenate per-sequence slice arrays and tables; write array, table and metadata atomically.
    Each part is (slices, table) or (slices, table, masks); masks are written when every part has them."""
    out_dir = Path(out_dir)
    parts = [p for p in parts if len(p[1])]
    if not parts:
        raise ValueError(f"{dataset}: no slices to write")
    table = pd.concat([p[1] for p in parts], ignore_index=True)
    table.insert(0, "row", np.arange(len(table)))
    table["dataset"] = dataset
    table = table[COLUMNS + [c for c in table.columns if c not in COLUMNS]]
    shape = (len(table), *parts[0][0].shape[1:])
    with atomic_path(out_dir / "slices.npy") as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
        start = 0
        for arr, *_ in parts:
            array[start:start + len(arr)] = arr
            start += len(arr)
        array.flush()
        del array
    if all(len(p) > 2 and p[2] is not None for p in parts):
        with atomic_path(out_dir / "masks.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.concatenate([p[2] for p in parts]).astype(np.uint8))
    else:
        (out_dir / "masks.npy").unlink(missing_ok=True)  # a mask file from an earlier run would no longer align
    seqs = table.drop_duplicates("seq_id")
    for split in SPLITS:
        if not (seqs.split == split).any():
            log.warning("%s: the %s split is empty (%d patients in all); training, selection or evaluation "
                        "on it will fail or mean nothing; add patients or change the split fractions",
                        dataset, split, table.case_id.nunique())
    meta = {
        **meta,
        "dataset": dataset,
        "n_slices": len(table),
        "n_sequences": len(seqs),
        "n_patients": int(table.case_id.nunique()),
        "slice_shape": list(shape[1:]),
        "sequences_by_split": seqs.split.value_counts().reindex(SPLITS, fill_value=0).to_dict(),
        "sequences_by_grade": {str(k): int(v) for k, v in seqs.grade.value_counts().sort_index().items()},
    }
    write_table(out_dir / "slices.parquet", table)
    write_json(out_dir / "prepare.json", meta)  # written last: its presence means the stage finished
    log.info("%s: %d slices in %d sequences (%s) -> %s", dataset, len(table), len(seqs),
             ", ".join(f"{k} {v}" for k, v in meta["sequences_by_split"].items()), out_dir)
    return table


# Seconds of work left, at the pace of the first items, beyond which a pool of worker processes pays:
# each spawned worker starts Python and imports torch and MONAI (about 6 s of CPU each), so the demo's
# 40 series (11 s in all) ran 2 s slower and cost twice the CPU with two workers than in-process.
POOL_WORTH_S = 60.0


def parallel_map(func, tasks: list, workers: int, desc: str):
    """``map`` with a progress bar, in order. With ``workers`` > 1 the items run in-process until the
    rest, at the pace so far, would take over ``POOL_WORTH_S``; the rest then go to that many processes."""
    with tqdm(total=len(tasks), desc=desc) as bar:
        started, done = time.perf_counter(), 0
        while done < len(tasks):
            left = len(tasks) - done
            if workers > 1 and left > 1 and done and (time.perf_counter() - started) / done * left > POOL_WORTH_S:
                context = multiprocessing.get_context("spawn")  # forking a process that holds torch is unsafe
                with ProcessPoolExecutor(min(workers, left), mp_context=context) as pool:
                    for result in pool.map(func, tasks[done:]):
                        bar.update()
                        yield result
                return
            yield func(tasks[done])
            done += 1
            bar.update()


def to_float16(images: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0).astype(np.float16)


def run(dataset: str, cfg: dict, manifest: str | Path, out_dir: str | Path, seed: int, workers: int = 1) -> pd.DataFrame:
    from importlib import import_module

    return import_module(f"lvdr.prepare.{dataset}").prepare(cfg, Path(manifest), Path(out_dir), seed, workers)
