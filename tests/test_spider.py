"""SPIDER: table join, disc extraction, splits and every kind of bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from lvdr import fetch, prepare
from lvdr.errors import DataError
from lvdr.prepare.spider import assign_splits, graded_discs, usable_discs

from conftest import SHARED_SPIDER


def run_spider(root, out, cfg, tmp_path):
    cfg = {**cfg["spider"], "source": "folder", "path": str(root)}
    manifest = fetch.run("spider", cfg, tmp_path / "raw", seed=3)
    return prepare.run("spider", cfg, manifest, out, seed=3)


@pytest.mark.skipif(not SHARED_SPIDER.is_dir(), reason=f"real SPIDER tables not found at {SHARED_SPIDER}")
def test_real_tables_join_to_the_known_disc_counts(warnings_logged):
    overview = pd.read_csv(SHARED_SPIDER / "overview.csv", dtype=str)
    gradings = pd.read_csv(SHARED_SPIDER / "radiological_gradings.csv", dtype=str)
    joined = graded_discs(overview, gradings)
    assert (joined.subset == "training").sum() == 1188
    assert (joined.subset == "validation").sum() == 273
    usable, skipped = usable_discs(joined)
    assert len(skipped) == 2 and all("IVD label 0" in s["reason"] for s in skipped)
    assert len(usable) == 1188 + 271
    assert usable.grade.between(0, 4).all()
    splits = assign_splits(usable, 0.1, seed=0)
    train = usable[usable.subset == "training"]
    assert set(splits[usable.subset == "validation"]) == {"test"}
    held = (splits[usable.subset == "training"] == "val").mean()
    assert 0.07 < held < 0.13
    for patient, group in splits.groupby(usable.patient):
        assert group.nunique() == 1, f"patient {patient} split across {set(group)}"
    assert "without a T2 series" in warnings_logged.text and len(train) == 1188


def test_demo_prepares_discs_in_order(spider_demo, tmp_path, tiny_config):
    table = run_spider(spider_demo, tmp_path / "prep", tiny_config, tmp_path)
    slices = np.load(tmp_path / "prep" / "slices.npy")
    assert slices.shape == (len(table), 1, 16, 16) and slices.dtype == np.float16
    assert 0 <= slices.min() and slices.max() <= 1
    assert table.seq_id.nunique() == 6 * 2
    for _, seq in table.groupby("seq_id"):
        assert seq.slice_pos.tolist() == list(range(len(seq)))
        assert (seq.n_slices == len(seq)).all()
        assert seq.source_slice.is_monotonic_increasing or seq.source_slice.is_monotonic_decreasing
        assert seq.source_slice.is_unique
    assert set(table.split) <= {"train", "val", "test"}
    assert table.groupby("case_id").split.nunique().max() == 1  # by patient, never by slice
    # the demo's evidence (the share of the disc's nucleus a slice shows) sits in the disc's central slices
    assert table.evidence.notna().all() and (table.evidence > 0).any() and (table.evidence == 0).any()
    assert table.evidence.between(0, 1).all() and np.allclose(table.groupby("seq_id").evidence.max(), 1, atol=0.2)
    assert (table.label_bin == (table.grade > 0)).all()
    # the graded disc's mask travels with each slice, cropped and resized like it: central in the crop
    masks = np.load(tmp_path / "prep" / "masks.npy")
    assert masks.shape == (len(table), 16, 16) and masks.dtype == np.uint8
    assert masks[:, 6:10, 6:10].any(axis=(1, 2)).all()  # every slice has disc near the crop centre
    assert masks.mean() < 0.5  # the disc, not the crop


def test_prepare_is_reproducible(spider_demo, tmp_path, tiny_config):
    a = run_spider(spider_demo, tmp_path / "a", tiny_config, tmp_path)
    b = run_spider(spider_demo, tmp_path / "b", tiny_config, tmp_path)
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "slices.npy"), np.load(tmp_path / "b" / "slices.npy"))


def test_raw_files_are_not_modified(spider_demo, tmp_path, tiny_config):
    before = {p: p.stat().st_mtime_ns for p in spider_demo.rglob("*")}
    run_spider(spider_demo, tmp_path / "prep", tiny_config, tmp_path)
    assert before == {p: p.stat().st_mtime_ns for p in spider_demo.rglob("*")}


def test_mask_without_the_disc_skips_it(spider_copy, tmp_path, tiny_config, warnings_logged):
    from lvdr.volumes import load_volume, write_mha

    mask_path = spider_copy / "masks" / "1_t2.mha"
    mask = np.asarray(load_volume(mask_path, ras=False)[0])
    mask[mask == 202] = 0
    write_mha(mask_path, mask.astype(np.uint8), spacing=(6.0, 2.5, 2.5))
    table = run_spider(spider_copy, tmp_path / "prep", tiny_config, tmp_path)
    assert "1_t2_ivd2" not in set(table.seq_id) and "1_t2_ivd1" in set(table.seq_id)
    assert "mask has no disc label 202 (IVD label 2)" in warnings_logged.text
    meta = json.loads((tmp_path / "prep" / "prepare.json").read_text())
    assert any(s.get("ivd_label") == 2 and s["series"] == "1_t2" for s in meta["skipped"])


def test_gradings_row_with_ivd_label_0_is_skipped(spider_copy, tmp_path, tiny_config, warnings_logged):
    path = spider_copy / "radiological_gradings.csv"
    gradings = pd.read_csv(path)
    extra = gradings.iloc[[0]].assign(**{"IVD label": 0})
    pd.concat([gradings, extra]).to_csv(path, index=False)
    table = run_spider(spider_copy, tmp_path / "prep", tiny_config, tmp_path)
    assert table.seq_id.nunique() == 12
    assert "IVD label 0 matches no disc" in warnings_logged.text


def test_series_missing_from_overview_is_skipped(spider_copy, tmp_path, tiny_config, warnings_logged):
    path = spider_copy / "overview.csv"
    overview = pd.read_csv(path)
    overview[overview.new_file_name != "2_t2"].to_csv(path, index=False)
    table = run_spider(spider_copy, tmp_path / "prep", tiny_config, tmp_path)
    assert "2" not in set(table.case_id)
    assert "2_t2.mha: series missing from overview.csv" in warnings_logged.text


def test_corrupt_image_names_the_file(spider_copy, tmp_path, tiny_config):
    path = spider_copy / "images" / "3_t2.mha"
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(DataError, match="3_t2.mha"):
        run_spider(spider_copy, tmp_path / "prep", tiny_config, tmp_path)
    assert not (tmp_path / "prep" / "slices.parquet").exists()


def test_gradings_without_a_needed_column(spider_copy, tmp_path, tiny_config):
    path = spider_copy / "radiological_gradings.csv"
    pd.read_csv(path).drop(columns="Pfirrman grade").to_csv(path, index=False)
    with pytest.raises(DataError, match="radiological_gradings.csv: missing column"):
        run_spider(spider_copy, tmp_path / "prep", tiny_config, tmp_path)


def test_folder_missing_masks(spider_copy, tmp_path, tiny_config):
    import shutil

    shutil.rmtree(spider_copy / "masks")
    with pytest.raises(DataError, match="missing masks/"):
        run_spider(spider_copy, tmp_path / "prep", tiny_config, tmp_path)


class RecordingPool:
    """Stands in for the process pool: records what it was handed and maps in-process."""

    handed: list = []

    def __init__(self, workers, mp_context=None):
        self.workers = workers

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, func, tasks):
        RecordingPool.handed = list(tasks)
        return map(func, tasks)


@pytest.mark.parametrize("worth_s, handed", [(float("inf"), []), (0.0, [1, 2, 3])])
def test_parallel_map_spawns_workers_only_for_work_worth_their_start(monkeypatch, worth_s, handed):
    """A small job (the demo) stays in-process; once the rest would outlast a worker's start-up, the rest
    go to the pool, and the results keep their order either way."""
    monkeypatch.setattr(prepare, "ProcessPoolExecutor", RecordingPool)
    monkeypatch.setattr(prepare, "POOL_WORTH_S", worth_s)
    RecordingPool.handed = []
    assert list(prepare.parallel_map(str, [0, 1, 2, 3], 2, "test")) == ["0", "1", "2", "3"]
    assert RecordingPool.handed == handed
    assert list(prepare.parallel_map(str, [0, 1, 2, 3], 1, "test")) == ["0", "1", "2", "3"]
    assert RecordingPool.handed == handed  # one worker: never a pool


def test_demo_evidence_is_the_share_of_each_discs_nucleus(tmp_path):
    """A degenerate disc's nucleus is smaller on every slice; its central slice still shows all of it."""
    from lvdr.prepare.spider import _read_evidence

    rows = [("1_t2", 1, i, px) for i, px in enumerate([0, 40, 100, 40, 0])] + \
           [("1_t2", 2, i, px) for i, px in enumerate([0, 10, 25, 10, 0])]
    pd.DataFrame(rows, columns=["series", "IVD label", "slice_index", "nucleus_px"]).to_csv(tmp_path / "e.csv", index=False)
    evidence = _read_evidence(tmp_path / "e.csv")["1_t2"]
    assert [evidence[(1, i)] for i in range(5)] == [evidence[(2, i)] for i in range(5)] == [0, 0.4, 1, 0.4, 0]
    pd.DataFrame(rows, columns=["series", "IVD label", "slice", "nucleus_px"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="bad.csv: missing column.*slice_index"):
        _read_evidence(tmp_path / "bad.csv")


def test_the_demo_nucleus_moves_off_centre_only_when_asked():
    from lvdr.demo.spider import _render_series

    cfg = {"n_sagittal": 15, "in_plane_px": 64, "in_plane_mm": 2.5, "slice_mm": 3.3}

    def centres(offset):
        rng = np.random.default_rng(1)
        _, _, evidence = _render_series(rng, np.array([0, 2, 4, 1, 3, 0]), {**cfg, "nucleus_offset_mm": offset},
                                        np.random.default_rng(2))
        table = pd.DataFrame(evidence, columns=["label", "slice", "nucleus_px", "disc_px"])
        weighted = table.assign(at=table.slice * table.nucleus_px).groupby("label")
        return weighted.at.sum() / weighted.nucleus_px.sum(), rng.random()  # nucleus centres (slices); rng's state

    (central, after_central), (moved, after_moved) = centres(0), centres(6)
    assert np.ptp(central) < 0.2  # every nucleus central: at the same point of every disc
    assert np.ptp(moved) > 1
    assert after_central == after_moved  # the main stream made the same draws: the next patient is the same
