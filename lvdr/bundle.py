"""A trained model packed for grading new scans: `lvdr export` writes it, `lvdr grade` reads it.

One folder, nothing in it executable: ``config.json`` (the resolved config the model was trained
with), ``model.json`` (the dataset, its task and what builds the two networks around their weights:
architectures, token shape, decision threshold), ``diffae.safetensors`` and ``prm.safetensors`` (weights
only; unlike a pickle, reading them runs no code), ``grade_direction.json`` (the counterfactual
direction in z_sem space), ``classifier.json`` (the fitted DiffAE+LR that grades decoded images), and
``manifest.json``: the sha256 of every file, the bundle format and the versions of lvdr and torch that
wrote it. A bundle whose files do not match its manifest is refused before anything is read.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lvdr import __version__
from lvdr.errors import DataError
from lvdr.files import atomic_folder, read_json, write_json
from lvdr.training import file_hash

log = logging.getLogger(__name__)

FORMAT = 1
FILES = ("config.json", "model.json", "diffae.safetensors", "prm.safetensors", "grade_direction.json", "classifier.json")


def export(cfg: dict, dataset: str, diffae_path, run, classifier_path, out_dir) -> Path:
    """Pack the stage-1 model, one trained LVDR run (its model.pt and trajectories.npz) and the DiffAE+LR
    into ``out_dir``, written beside it and renamed, so that a killed export leaves no bundle that looks whole."""
    from safetensors.torch import save_file

    from lvdr.explain.counterfactuals import fit_grade_direction
    from lvdr.explain.trajectories import load_trajectories
    from lvdr.prm.train import PRM_META

    run, out_dir = Path(run), Path(out_dir)
    for path in (diffae_path, run / "model.pt", run / "trajectories.npz", classifier_path):
        if not Path(path).is_file():
            raise DataError(f"{path}: missing; the bundle needs the trained DiffAE, an LVDR run and the DiffAE+LR")
    diffae = torch.load(diffae_path, map_location="cpu", weights_only=True)
    prm = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    train = [t for t in load_trajectories(run / "trajectories.npz") if t["split"] == "train"]
    direction, step = fit_grade_direction(train)
    with atomic_folder(out_dir) as staging:
        write_json(staging / "config.json", cfg)
        write_json(staging / "model.json", {
            "dataset": dataset, "task": "binary" if prm["num_classes"] == 2 else "ordinal", "trained_run": str(run),
            "diffae": {k: diffae[k] for k in ("config", "in_channels", "image_size", "step")},
            "prm": {k: prm.get(k) for k in PRM_META}})
        save_file({k: v.contiguous() for k, v in diffae["state_dict"].items()}, staging / "diffae.safetensors")
        save_file({k: v.contiguous() for k, v in prm["state_dict"].items()}, staging / "prm.safetensors")
        write_json(staging / "grade_direction.json", {"direction": direction.tolist(), "step": step,
                                                      "fitted_on": f"{len(train)} training sequences' z_sem"})
        shutil.copyfile(classifier_path, staging / "classifier.json")
        write_json(staging / "manifest.json", {
            "format": FORMAT, "lvdr": __version__, "torch": torch.__version__, "dataset": dataset,
            "files": {name: file_hash(staging / name) for name in FILES}})
    log.info("%s bundle written to %s (%s)", dataset, out_dir, ", ".join(FILES))
    return out_dir


def verify(folder) -> dict:
    """The bundle's manifest, after checking that every file it lists is there with the same sha256."""
    folder = Path(folder)
    if not (folder / "manifest.json").is_file():
        raise DataError(f"{folder}: not a model bundle (no manifest.json); make one with `lvdr export`")
    manifest = read_json(folder / "manifest.json")
    if manifest.get("format") != FORMAT:
        raise DataError(f"{folder}: bundle format {manifest.get('format')!r}, but this lvdr reads format {FORMAT}; "
                        "export it again with this version")
    listed = manifest.get("files") or {}
    if set(FILES) - set(listed):
        raise DataError(f"{folder}/manifest.json: does not list {', '.join(sorted(set(FILES) - set(listed)))}")
    for name in FILES:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path}: listed in the bundle's manifest but missing; the bundle is incomplete")
        if file_hash(path) != listed[name]:
            raise DataError(f"{path}: its sha256 does not match the bundle's manifest; the bundle was changed after "
                            "export and is refused")
    for package, have in (("lvdr", __version__), ("torch", torch.__version__)):
        if manifest.get(package) != have:
            log.warning("%s: exported with %s %s, read with %s %s; the numbers may differ in the last digits",
                        folder, package, manifest.get(package), package, have)
    return manifest


def _weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as error:
        raise DataError(f"{path}: not a safetensors weight file ({error}); refused, nothing in it was run") from None


@dataclass
class Bundle:
    folder: Path
    config: dict
    dataset: str
    task: str
    diffae: torch.nn.Module
    diffae_config: dict
    prm: torch.nn.Module
    direction: np.ndarray
    step: float
    classifier: object
    num_classes: int


def load(folder) -> Bundle:
    """A verified bundle's networks (eval mode, CPU), grade direction and latent classifier."""
    from lvdr.baselines.latent import load_linear
    from lvdr.diffae.train import from_saved
    from lvdr.prm.train import prm_from_saved

    folder = Path(folder)
    verify(folder)
    meta = read_json(folder / "model.json")
    try:
        diffae = from_saved(meta["diffae"], _weights(folder / "diffae.safetensors"))
        prm = prm_from_saved(meta["prm"], _weights(folder / "prm.safetensors"))
    except (KeyError, RuntimeError) as error:
        raise DataError(f"{folder}: the weights do not fit the networks model.json describes ({error})") from None
    direction = read_json(folder / "grade_direction.json")
    classifier, num_classes = load_linear(folder / "classifier.json")
    return Bundle(folder, read_json(folder / "config.json"), meta["dataset"], meta["task"], diffae, meta["diffae"]["config"],
                  prm, np.asarray(direction["direction"]), float(direction["step"]), classifier, num_classes)
