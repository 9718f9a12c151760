"""`lvdr grade`'s input checks: each bad scan gets one message naming the file and what is wrong.
(That a demo case grades to the pipeline's own probabilities is checked end to end in test_pipeline.)"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lvdr.errors import DataError
from lvdr.grade import check_modality, sequences_of


def test_a_scan_named_as_another_sequence_is_refused():
    with pytest.raises(DataError, match="the name says t1, but this spider bundle grades a sagittal T2"):
        check_modality(Path("case_t1.mha"), "spider")
    with pytest.raises(DataError, match="the name says seg"):
        check_modality(Path("BraTS2021_00001_seg.nii.gz"), "brats")
    check_modality(Path("BraTS2021_00001_flair.nii.gz"), "brats")
    check_modality(Path("case_t2.mha"), "spider")


def test_a_spider_disc_the_mask_lacks_is_named(spider_demo, tiny_config):
    image = next((spider_demo / "images").glob("*_t2.mha"))
    mask = spider_demo / "masks" / image.name
    (name, slices, masks), = sequences_of(image, "spider", tiny_config, mask, 1, None)
    assert name == f"{image.stem}_ivd1" and slices.shape[1:] == (1, 16, 16) and masks.shape == (len(slices), 16, 16)
    with pytest.raises(DataError, match="mask has no disc label 209"):
        sequences_of(image, "spider", tiny_config, mask, 9, None)
    with pytest.raises(DataError, match="give its mask"):
        sequences_of(image, "spider", tiny_config, None, 1, None)


def test_corrupt_flat_and_multichannel_volumes_are_refused(tmp_path, tiny_config):
    corrupt = tmp_path / "corrupt_flair.nii.gz"
    corrupt.write_bytes(b"not a volume at all")
    with pytest.raises(DataError, match="corrupt_flair.nii.gz: cannot read image"):
        sequences_of(corrupt, "brats", tiny_config, None, None, None)
    flat = tmp_path / "flat_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((32, 32), np.float32), np.eye(4)), flat)
    with pytest.raises(DataError, match="flat_flair.nii.gz: expected a 3D volume"):
        sequences_of(flat, "brats", tiny_config, None, None, None)
    stacked = tmp_path / "stacked_flair.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 8, 4), np.float32), np.eye(4)), stacked)
    with pytest.raises(DataError, match="expected one 3D FLAIR volume, got 4 channels"):
        sequences_of(stacked, "brats", tiny_config, None, None, None)
    with pytest.raises(DataError, match="has no multi-slice model"):
        sequences_of(flat, "retinamnist", tiny_config, None, None, None)
