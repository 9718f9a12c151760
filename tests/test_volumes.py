import numpy as np
import pytest

from lvdr.errors import DataError
from lvdr.volumes import display, load_volume, write_mha, write_nifti


def ramp(shape=(4, 5, 6)):
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def test_mha_is_read_in_ras(tmp_path):
    data = ramp()
    write_mha(tmp_path / "v.mha", data, spacing=(2.0, 1.0, 1.0))
    raw = load_volume(tmp_path / "v.mha", ras=False)
    ras = load_volume(tmp_path / "v.mha")
    np.testing.assert_array_equal(np.asarray(raw[0]), data)
    # ITK's identity direction is LPS: RAS flips the first two axes
    np.testing.assert_array_equal(np.asarray(ras[0]), data[::-1, ::-1, :])
    assert np.allclose(np.diag(np.asarray(ras.affine))[:3], [2.0, 1.0, 1.0])


def test_nifti_round_trip(tmp_path):
    data = ramp()
    write_nifti(tmp_path / "v.nii.gz", data, spacing=(1.0, 1.0, 2.0))
    vol = load_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(np.asarray(vol[0]), data)


@pytest.mark.parametrize("name", ["v.mha", "v.nii.gz"])
def test_truncated_file_names_the_file(tmp_path, name):
    path = tmp_path / name
    (write_mha if name.endswith(".mha") else write_nifti)(path, ramp((16, 16, 16)), (1.0, 1.0, 1.0))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{name}: cannot read image"):
        load_volume(path)


def test_garbage_file_names_the_file(tmp_path):
    path = tmp_path / "junk.mha"
    path.write_bytes(b"\x00\x01 not an image at all")
    with pytest.raises(DataError, match="junk.mha"):
        load_volume(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.mha: file not found"):
        load_volume(tmp_path / "nope.mha")


def test_display_puts_superior_up_and_anterior_left():
    sagittal = np.zeros((3, 4))  # (anterior-posterior axis towards anterior, inferior-superior towards superior)
    sagittal[-1, -1] = 1  # most anterior, most superior
    assert display(sagittal)[0, 0] == 1
