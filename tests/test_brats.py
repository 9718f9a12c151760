"""BraTS: the three folder layouts, edema labels at volume and slab level, bad cases."""

import numpy as np
import pytest

from lvdr import fetch, prepare
from lvdr.errors import DataError
from lvdr.fetch.brats import patient_of
from lvdr.volumes import write_nifti

SHAPE = (20, 20, 12)


def brain_case(edema_slices=range(0, 0), seed=0):
    """A box-shaped brain filling slices 2..9 with edema (label 2 in BraTS) in ``edema_slices``."""
    rng = np.random.default_rng(seed)
    flair = np.zeros(SHAPE, np.float32)
    flair[4:16, 3:17, 2:10] = rng.uniform(100, 200, (12, 14, 8))
    seg = np.zeros(SHAPE, np.uint8)
    for z in edema_slices:
        seg[8:12, 8:12, z] = 2
        flair[8:12, 8:12, z] = 400
    return flair, seg


def write_layout(root, layout, cases):
    for i, (flair, seg) in enumerate(cases):
        if layout == "brats2021":
            name = f"BraTS2021_{i:05d}"
            write_nifti(root / name / f"{name}_flair.nii.gz", flair, (1, 1, 1))
            write_nifti(root / name / f"{name}_seg.nii.gz", seg, (1, 1, 1))
        elif layout == "brats2023":
            name = f"BraTS-GLI-{i // 2:05d}-{i % 2:03d}"  # two timepoints per patient
            write_nifti(root / name / f"{name}-t2f.nii.gz", flair, (1, 1, 1))
            write_nifti(root / name / f"{name}-seg.nii.gz", np.where(seg == 2, 2, seg), (1, 1, 1))
        else:  # MSD Task01: 4D image (FLAIR first), label 1 = edema
            name = f"BRATS_{i:03d}.nii.gz"
            image = np.stack([flair, flair * 0.5, flair * 0.2, flair * 0.7], axis=-1)
            write_nifti(root / "imagesTr" / name, image, (1, 1, 1))
            write_nifti(root / "labelsTr" / name, (seg == 2).astype(np.uint8), (1, 1, 1))


def run(root, tmp_path, tiny_config, **prepare_cfg):
    cfg = {**tiny_config["brats"], "source": "folder", "path": str(root)}
    cfg["prepare"] = {**cfg["prepare"], **prepare_cfg}
    manifest = fetch.run("brats", cfg, tmp_path / "raw", seed=1)
    return prepare.run("brats", cfg, manifest, tmp_path / "prep", seed=1), manifest


CASES = [brain_case(range(3, 6), 0), brain_case(seed=1), brain_case(range(6, 9), 2), brain_case(seed=3)]


@pytest.mark.parametrize("layout", ["brats2021", "brats2023", "msd"])
def test_layouts_give_the_same_volume_labels(layout, tmp_path, tiny_config):
    write_layout(tmp_path / "data", layout, CASES)
    table, _ = run(tmp_path / "data", tmp_path, tiny_config, label_level="volume", image_size=8)
    per_seq = table.drop_duplicates("seq_id")
    assert per_seq.label_bin.tolist() == [1, 0, 1, 0]
    assert (per_seq.n_slices == 8).all()  # brain spans slices 2..9
    edema = table.groupby("seq_id").evidence.apply(lambda e: int((e > 0).sum()))
    assert sorted(edema.tolist()) == [0, 0, 3, 3]
    slices = np.load(tmp_path / "prep" / "slices.npy")
    assert slices.shape == (len(table), 1, 8, 8)
    if layout == "brats2023":  # timepoints of one patient stay together
        assert table.case_id.nunique() == 2
        assert table.groupby("case_id").split.nunique().max() == 1


def test_slab_labels_follow_edema_position(tmp_path, tiny_config):
    write_layout(tmp_path / "data", "brats2021", CASES)
    table, _ = run(tmp_path / "data", tmp_path, tiny_config, label_level="slab", slab_length=4, image_size=8)
    labels = table.drop_duplicates("seq_id").set_index("seq_id").label_bin
    # case 0: edema in z 3..5 -> first slab (z 2..5) only; case 2: z 6..8 -> second slab (z 6..9) only
    assert labels["BraTS2021_00000_slab00"] == 1 and labels["BraTS2021_00000_slab01"] == 0
    assert labels["BraTS2021_00002_slab00"] == 0 and labels["BraTS2021_00002_slab01"] == 1


def test_case_without_segmentation_is_skipped(tmp_path, tiny_config, warnings_logged):
    write_layout(tmp_path / "data", "brats2021", CASES)
    (tmp_path / "data" / "BraTS2021_00001" / "BraTS2021_00001_seg.nii.gz").unlink()
    table, _ = run(tmp_path / "data", tmp_path, tiny_config, label_level="volume")
    assert "BraTS2021_00001" not in set(table.case_id)
    assert "BraTS case BraTS2021_00001: no segmentation" in warnings_logged.text


def test_corrupt_flair_names_the_file(tmp_path, tiny_config):
    write_layout(tmp_path / "data", "brats2021", CASES)
    path = tmp_path / "data" / "BraTS2021_00002" / "BraTS2021_00002_flair.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="BraTS2021_00002_flair.nii.gz"):
        run(tmp_path / "data", tmp_path, tiny_config)


def test_empty_folder(tmp_path, tiny_config):
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="no BraTS cases found"):
        run(tmp_path / "data", tmp_path, tiny_config)


def test_patient_ids():
    assert patient_of("BraTS-GLI-00012-001") == "00012"
    assert patient_of("BraTS2021_00012") == "BraTS2021_00012"


def test_demo_has_both_labels_and_edema_evidence(tmp_path, tiny_config):
    cfg = tiny_config["brats"]
    manifest = fetch.run("brats", cfg, tmp_path / "raw", seed=1)
    table = prepare.run("brats", cfg, manifest, tmp_path / "prep", seed=1)
    seqs = table.drop_duplicates("seq_id")
    assert set(seqs.label_bin) == {0, 1}
    positive = table[table.label_bin == 1].groupby("seq_id").evidence.max()
    assert (positive > 0).all()
    # the edema mask travels with each slice: present where the slice has edema, never where it has none;
    # and the label follows it: a slice with fewer than min_edema_px edema pixels at the prepared size shows none
    area = np.load(tmp_path / "prep" / "masks.npy").sum(axis=(1, 2))
    assert (area[table.label_bin.to_numpy() == 0] < cfg["prepare"]["min_edema_px"]).all()
    assert (table.assign(area=area).groupby("seq_id").area.max().loc[positive.index] >= cfg["prepare"]["min_edema_px"]).all()
    assert len(area) == len(table) and (area[table.evidence.to_numpy() == 0] == 0).all()
    big = table.evidence.to_numpy() >= 0.5 * table.evidence.max()
    assert (area[big] > 0).all()


def test_edema_too_small_to_show_at_the_prepared_size_labels_no_slab():
    """A slab is positive when its prepared slices show edema, not when the source volume has a few voxels of it."""
    from lvdr.prepare.brats import sequences

    masks = np.zeros((12, 4, 4), bool)
    masks[1, 0, 0] = True  # the first slab: one edema pixel
    masks[6, 1:3, 1:3] = True  # the second slab: a 2 x 2 patch; the third slab: edema voxels under any pixel
    edema_px = np.array([0, 6, 0, 0, 0, 0, 40, 0, 0, 3, 0, 0])
    case = {"case_id": "c", "source": "c.nii.gz", "slices": np.zeros((12, 1, 4, 4), np.float16), "z": np.arange(12),
            "edema_px": edema_px, "masks": masks}
    cfg = {"label_level": "slab", "slab_length": 4, "min_edema_px": 4}
    assert [table.label_bin.iloc[0] for _, table, _ in sequences(case, "p", cfg)] == [0, 1, 0]
    parts = sequences(case, "p", {**cfg, "min_edema_px": 1})
    assert [table.label_bin.iloc[0] for _, table, _ in parts] == [1, 1, 0]
    assert list(parts[2][1].evidence) == [0, 3, 0, 0]  # the source's edema area is still recorded as evidence


def _prepared_slices(root, tmp_path, tiny_config, name):
    table, _ = run(root, tmp_path / name, tiny_config, label_level="volume", image_size=8)
    return table, np.load(tmp_path / name / "prep" / "slices.npy").astype(np.float32)


def test_raw_rescaled_zscored_lps_and_symlinked_volumes_prepare_to_the_same_slices(tmp_path, tiny_config):
    """Real releases store FLAIR raw, rescaled or z-scored (a constant negative background, negative
    values inside the brain), in LPS or RAS, segmentations as floats, files as symlinks."""
    import nibabel as nib

    flair, seg = brain_case(range(3, 6), 0)
    flair[flair > 0] += 40.0 * np.sin(np.arange(flair[flair > 0].size))  # some texture, values of both signs below
    zscored = (flair - flair[flair > 0].mean()) / flair[flair > 0].std()
    zscored[flair == 0] = -3.6  # background as z-scoring pipelines store it
    assert (zscored[flair > 0] < 0).any()
    variants = {"raw": (flair, seg), "rescaled": (flair * 3.7 + 12.0, seg), "zscored": (zscored, seg.astype(np.float32))}
    results = {}
    for name, (vol, labels) in variants.items():
        write_layout(tmp_path / name, "brats2021", [(vol.astype(np.float32), labels), brain_case(seed=1)])
        results[name] = _prepared_slices(tmp_path / name, tmp_path, tiny_config, f"prep_{name}")
    # the same raw volume in LPS (axes flipped, affine saying so), its files symlinked from elsewhere
    store = tmp_path / "store"
    store.mkdir()
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(flair[::-1, ::-1].copy(), lps), str(store / "flair.nii.gz"))
    nib.save(nib.Nifti1Image(seg[::-1, ::-1].copy(), lps), str(store / "seg.nii.gz"))
    write_layout(tmp_path / "lps", "brats2021", [brain_case(seed=1)])
    case = tmp_path / "lps" / "BraTS2021_00001"
    case.mkdir()
    (case / "BraTS2021_00001_flair.nii.gz").symlink_to(store / "flair.nii.gz")
    (case / "BraTS2021_00001_seg.nii.gz").symlink_to(store / "seg.nii.gz")
    (tmp_path / "lps" / "BraTS2021_00000").rename(tmp_path / "lps" / "BraTS2021_00002")  # keep the case order
    table, slices = _prepared_slices(tmp_path / "lps", tmp_path, tiny_config, "prep_lps")
    reference_table, reference = results["raw"]
    first = reference_table.seq_id == reference_table.seq_id.iloc[0]
    for name, (table_v, slices_v) in [*results.items(), ("lps", (table, slices))]:
        mine = table_v.case_id == ("BraTS2021_00001" if name == "lps" else reference_table.case_id.iloc[0])
        assert mine.sum() == first.sum() == 8, name  # the brain spans 8 slices in every variant
        np.testing.assert_allclose(slices_v[mine.to_numpy()], reference[first.to_numpy()], atol=2e-3, err_msg=name)
        assert table_v[mine].evidence.tolist() == reference_table[first].evidence.tolist(), name


def test_one_patient_folder_warns_that_splits_are_empty(tmp_path, tiny_config, warnings_logged):
    write_layout(tmp_path / "data", "brats2021", [brain_case(range(3, 6), 0)])
    run(tmp_path / "data", tmp_path, tiny_config, label_level="volume", image_size=8)
    assert "the val split is empty" in warnings_logged.text and "the test split is empty" in warnings_logged.text


def test_demo_noise_is_band_limited_and_seeded():
    from lvdr.demo.noise import smooth_noise

    a = smooth_noise(np.random.default_rng(3), (24, 20, 16), 4)
    assert np.array_equal(a, smooth_noise(np.random.default_rng(3), (24, 20, 16), 4))
    assert np.isclose(np.abs(a).max(), 1.0)
    spectrum = np.abs(np.fft.fftn(a))
    freqs = np.meshgrid(*[np.fft.fftfreq(n) for n in a.shape], indexing="ij")
    assert spectrum[np.sqrt(sum(f**2 for f in freqs)) >= 1 / 4].max() < 1e-9 * spectrum.max()
