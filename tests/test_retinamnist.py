import numpy as np
import pytest

from lvdr import fetch, prepare
from lvdr.errors import DataError


def fake_npz(path, n=4, size=28, drop=None):
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = np.full((n, size, size, 3), 128, np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 5).reshape(-1, 1)
    arrays.pop(drop, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def test_pre_placed_npz_needs_no_network(tmp_path, tiny_config):
    fake_npz(tmp_path / "mm" / "retinamnist.npz")
    cfg = {**tiny_config["retinamnist"], "source": "medmnist", "root": str(tmp_path / "mm"), "download": False}
    manifest = fetch.run("retinamnist", cfg, tmp_path / "raw", seed=0)
    table = prepare.run("retinamnist", cfg, manifest, tmp_path / "prep", seed=0)
    assert table.split.value_counts().to_dict() == {"train": 4, "val": 4, "test": 4}
    assert (table.n_slices == 1).all() and table.seq_id.is_unique
    slices = np.load(tmp_path / "prep" / "slices.npy")
    assert slices.shape == (12, 3, 28, 28)
    assert np.allclose(slices, 128 / 255, atol=1e-3)


def test_npz_without_expected_keys(tmp_path, tiny_config):
    fake_npz(tmp_path / "mm" / "retinamnist.npz", drop="val_labels")
    cfg = {**tiny_config["retinamnist"], "source": "medmnist", "root": str(tmp_path / "mm")}
    with pytest.raises(DataError, match="retinamnist.npz: not a MedMNIST file, missing keys val_labels"):
        fetch.run("retinamnist", cfg, tmp_path / "raw", seed=0)


def test_missing_npz_without_download_says_where_to_put_it(tmp_path, tiny_config):
    cfg = {**tiny_config["retinamnist"], "source": "medmnist", "root": str(tmp_path / "mm"), "download": False}
    with pytest.raises(DataError, match="retinamnist.npz: not found. Put MedMNIST's retinamnist.npz there"):
        fetch.run("retinamnist", cfg, tmp_path / "raw", seed=0)


def test_demo_is_seeded_and_resizable(tmp_path, tiny_config):
    cfg = tiny_config["retinamnist"]
    cfg["prepare"]["image_size"] = 16
    a = fetch.run("retinamnist", cfg, tmp_path / "a", seed=5)
    b = fetch.run("retinamnist", cfg, tmp_path / "b", seed=5)
    assert (tmp_path / "a/demo/retinamnist.npz").read_bytes() == (tmp_path / "b/demo/retinamnist.npz").read_bytes()
    table = prepare.run("retinamnist", cfg, a, tmp_path / "prep", seed=5)
    assert np.load(tmp_path / "prep" / "slices.npy").shape == (len(table), 3, 16, 16)
    assert b.exists()


def test_demo_disks_painted_on_their_bounding_box_match_the_whole_grid():
    from lvdr.demo.retinamnist import _paint

    n = 112
    yy, xx = np.mgrid[0:n, 0:n] / n
    within = np.hypot(yy - 0.5, xx - 0.5) < 0.46
    rng = np.random.default_rng(0)
    for cy, cx, r in [(0.5, 0.5, 0.06), (0.01, 0.99, 0.03), (-0.02, 0.4, 0.05), (0.731, 0.262, 0.008), *rng.uniform(0, 1, (40, 3)) * [1, 1, 0.1]]:
        for mask in (None, within):
            expected = np.zeros((n, n, 3))
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            expected[disk if mask is None else disk & mask] = [0.2, 0.4, 0.6]
            painted = np.zeros((n, n, 3))
            _paint(painted, yy, xx, cy, cx, r, [0.2, 0.4, 0.6], mask)
            assert np.array_equal(painted, expected), (cy, cx, r)
