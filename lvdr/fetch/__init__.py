"""Fetch: make data/raw/<dataset>/manifest.json point at complete raw data."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lvdr.errors import DataError
from lvdr.files import read_json, write_json


def _relative(obj, base: Path):
    """Paths in a manifest are stored relative to it, so a moved checkout still works."""
    if isinstance(obj, Path):
        return os.path.relpath(obj.resolve(), base.resolve())
    if isinstance(obj, dict):
        return {k: _relative(v, base) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v, base) for v in obj]
    return obj


def make_demo(dataset: str, cfg: dict, out_dir: Path, seed: int) -> Path:
    """Generate the dataset's demo afresh in ``out_dir/demo`` (generated data only, never user data)."""
    from importlib import import_module

    root = out_dir / "demo"
    shutil.rmtree(root, ignore_errors=True)
    import_module(f"lvdr.demo.{dataset}").generate(root, cfg, seed)
    return root


def user_folder(dataset: str, cfg: dict, key: str = "path") -> Path:
    """The folder a user pointed the config at; it must exist."""
    if not cfg[key]:
        raise DataError(f"config key '{dataset}.{key}': required with {dataset}.source: {cfg['source']}")
    root = Path(cfg[key]).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (config key '{dataset}.{key}')")
    return root


def run(dataset: str, cfg: dict, out_dir: str | Path, seed: int) -> Path:
    from importlib import import_module

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = import_module(f"lvdr.fetch.{dataset}").fetch(cfg, out_dir, seed)
    path = out_dir / "manifest.json"
    write_json(path, _relative(manifest, out_dir))
    return path


def read_manifest(path: str | Path) -> tuple[dict, Path]:
    """The manifest and the folder its relative paths start from."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found; run `lvdr fetch` for this dataset first")
    manifest = read_json(path)
    return manifest, (path.parent / manifest["root"]).resolve()


def provenance(manifest: dict, root: Path) -> dict:
    """Where a prepared dataset came from, for the report: generated demo or a real release, its
    folder (relative to the working directory, so the record does not name the machine) and the
    checksums fetch recorded."""
    return {"source": manifest["source"], "path": os.path.relpath(root), "checksums": manifest.get("checksums", {})}


def resolve(path_in_manifest: str, manifest_path: str | Path) -> Path:
    return (Path(manifest_path).parent / path_in_manifest).resolve()
