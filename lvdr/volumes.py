"""Read and write 3D medical volumes as MONAI MetaTensors with RAS affines.

NIfTI goes through MONAI's nibabel reader; ITK formats (.mha, .nrrd, ...) through
SimpleITK, converting ITK's LPS world frame to MONAI's RAS. MONAI and torch are imported by
the readers only: the writers serve the demo generators, whose jobs would otherwise spend
seconds importing all of MONAI (it loads every submodule) to write a few files.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from lvdr.errors import DataError
from lvdr.files import atomic_path

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith((".nii", ".nii.gz"))


def _load_itk(path: Path) -> MetaTensor:
    import torch
    from monai.data import MetaTensor

    image = sitk.ReadImage(str(path))
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: expected a 3D single-channel image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} components"
        )
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # (z, y, x) -> (x, y, z)
    affine = np.eye(4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine[:3, :3] = direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    affine = LPS_TO_RAS @ affine
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None], affine=torch.from_numpy(affine))


def load_volume(path: str | Path, ras: bool = True) -> MetaTensor:
    """Channel-first volume (C, X, Y, Z) with its RAS affine; any read failure names the file."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import LoadImage

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if is_nifti(path):
            volume = LoadImage(reader="NibabelReader", image_only=True, ensure_channel_first=True)(str(path))
            volume = MetaTensor(torch.as_tensor(np.asarray(volume), dtype=torch.float32), affine=volume.affine)
        else:
            volume = _load_itk(path)
    except DataError:
        raise
    except Exception as exc:  # corrupt or truncated files fail inside the readers in many ways
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'})") from None
    if volume.ndim != 4:
        raise DataError(f"{path}: expected a 3D volume, got array of shape {tuple(volume.shape)}")
    if not torch.isfinite(volume).all():
        raise DataError(f"{path}: image contains NaN or infinite values")
    return to_ras(volume) if ras else volume


def to_ras(volume: MetaTensor) -> MetaTensor:
    """Reorder axes so the array runs left->right, posterior->anterior, inferior->superior."""
    from monai.transforms import Orientation

    return Orientation(axcodes="RAS", labels=None)(volume)


def write_mha(path: str | Path, array_xyz: np.ndarray, spacing, origin=(0.0, 0.0, 0.0)) -> None:
    """Write an (x, y, z) array as MetaImage with identity LPS direction (as SimpleITK writes)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_xyz.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=True)


def write_nifti(path: str | Path, array: np.ndarray, spacing) -> None:
    """Write an (x, y, z[, c]) array as NIfTI in RAS with the given voxel spacing."""
    affine = np.diag([*map(float, spacing), 1.0])
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(array, affine), str(tmp))


def display(slice_2d: np.ndarray) -> np.ndarray:
    """A RAS slice (first axis towards right/anterior) in radiological display order."""
    return np.ascontiguousarray(slice_2d[::-1, ::-1].T)
