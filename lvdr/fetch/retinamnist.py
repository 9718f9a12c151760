"""RetinaMNIST through the medmnist package, or a MedMNIST-style demo .npz."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lvdr.errors import DataError
from lvdr.fetch.download import NoNetwork

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def check_npz(path: Path) -> None:
    """The .npz must hold MedMNIST's six arrays with matching lengths."""
    try:
        with np.load(path) as npz:
            keys = set(npz.files)
            missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in keys]
            if missing:
                raise DataError(f"{path}: not a MedMNIST file, missing keys {', '.join(missing)} (has {', '.join(sorted(keys))})")
            for split in SPLITS:
                n_img, n_lab = len(npz[f"{split}_images"]), len(npz[f"{split}_labels"])
                if n_img != n_lab:
                    raise DataError(f"{path}: {split}_images has {n_img} rows but {split}_labels {n_lab}")
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read .npz ({type(exc).__name__}: {exc})") from None


def fetch(cfg: dict, out_dir: Path, seed: int) -> dict:
    from lvdr.demo.retinamnist import npz_name
    from lvdr.fetch import make_demo

    if cfg["source"] == "demo":
        root = make_demo("retinamnist", cfg, out_dir, seed)
    else:
        root = Path(cfg["root"]).expanduser() if cfg["root"] else out_dir
        if not (root / npz_name(cfg["size"])).is_file():
            if not cfg["download"]:
                raise DataError(
                    f"{root / npz_name(cfg['size'])}: not found. Put MedMNIST's {npz_name(cfg['size'])} there "
                    "(from https://zenodo.org/records/10519652), or set retinamnist.download: true"
                )
            import medmnist

            root.mkdir(parents=True, exist_ok=True)
            try:
                medmnist.RetinaMNIST(split="train", root=str(root), size=cfg["size"], download=True)
            except Exception as exc:
                raise NoNetwork(
                    f"medmnist could not download RetinaMNIST to {root} ({' '.join(str(exc).split())}). Without network, put "
                    f"{npz_name(cfg['size'])} in {root} by hand and set retinamnist.download: false"
                ) from None
    npz = root / npz_name(cfg["size"])
    check_npz(npz)
    from lvdr.fetch.download import file_md5

    return {"dataset": "retinamnist", "source": cfg["source"], "root": root, "npz": npz.name, "size": cfg["size"],
            "checksums": {npz.name: f"md5 {file_md5(npz)}"}}
