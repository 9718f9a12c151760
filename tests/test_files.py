import numpy as np
import pytest

from lvdr.files import atomic_path, write_array


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.npy"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a file")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_successful_write_replaces(tmp_path):
    target = tmp_path / "a.npy"
    write_array(target, np.arange(3))
    write_array(target, np.arange(4))
    assert np.load(target).tolist() == [0, 1, 2, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]
