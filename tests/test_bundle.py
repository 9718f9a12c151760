"""Model bundles (lvdr.bundle): export, the manifest check, and weights that can never run code."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from lvdr import bundle
from lvdr import config as configs
from lvdr.baselines.latent import make_classifier, save_linear
from lvdr.diffae.model import DiffAE
from lvdr.errors import DataError
from lvdr.prm.model import PRM
from lvdr.prm.train import Sequence, load_prm, write_trajectories
from lvdr.training import Checkpoints, save_torch

from conftest import TINY_DIFFAE

D = 16  # TINY_DIFFAE's z_dim, the PRM's width


class Payload:
    """A pickle that runs a shell command when it is loaded (what a malicious weight file carries)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def parts(tmp_path):
    """A DiffAE checkpoint, an LVDR run (model.pt and trajectories.npz) and a DiffAE+LR, as the pipeline writes them."""
    torch.manual_seed(0)
    dcfg = configs.validate({"diffae": TINY_DIFFAE})["diffae"]
    save_torch({"config": dcfg, "in_channels": 1, "image_size": 16, "step": 6,
                "state_dict": DiffAE(1, 16, dcfg).state_dict()}, tmp_path / "diffae.pt")
    pcfg = configs.validate({"prm": {"slots": 4, "heads": 2, "queries": 2}})["prm"]
    prm = PRM(6, 4, D, 5, pcfg, D)
    run = tmp_path / "run"
    save_torch({"config": pcfg, "state_dict": prm.state_dict(), "best_step": 2, "d": D, "token_shape": [4, 6], "code_dim": D,
                "num_classes": 5, "threshold": None, "decoder": None}, run / "model.pt")
    rng = np.random.default_rng(0)
    seqs = [Sequence(f"s{i}", "train" if i < 20 else "test", i % 5, int(i % 5 > 0), np.arange(3) + 3 * i, np.arange(3))
            for i in range(25)]
    results = [{"P": rng.normal(size=(3, D)).astype(np.float32), "z": rng.normal(size=(3, D)).astype(np.float32)} for _ in seqs]
    write_trajectories(run / "trajectories.npz", seqs, results)
    z, y = rng.normal(size=(100, D)), rng.integers(0, 5, 100)
    save_linear(make_classifier("diffae_lr", 1.0, 500, 0, y).fit(z, y), tmp_path / "classifier.json", 1.0, 5)
    return tmp_path, run


def exported(parts, tiny_config):
    root, run = parts
    return bundle.export(tiny_config, "spider", root / "diffae.pt", run, root / "classifier.json", root / "bundle")


def test_an_exported_bundle_loads_the_same_networks(parts, tiny_config):
    folder = exported(parts, tiny_config)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["files"]) == set(bundle.FILES) and manifest["torch"] == torch.__version__
    loaded = bundle.load(folder)
    original = load_prm(parts[1] / "model.pt")
    for (name, a), (_, b) in zip(original.state_dict().items(), loaded.prm.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)
    assert loaded.dataset == "spider" and loaded.task == "ordinal" and loaded.num_classes == 5
    assert np.isclose(np.linalg.norm(loaded.direction), 1) and loaded.step > 0
    assert not list(folder.parent.glob(".bundle.*")), "the staging folder is renamed, not left behind"


def test_a_tampered_or_incomplete_bundle_is_refused(parts, tiny_config):
    folder = exported(parts, tiny_config)
    with open(folder / "classifier.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(DataError, match="classifier.json: its sha256 does not match"):
        bundle.load(folder)
    folder = exported(parts, tiny_config)
    (folder / "grade_direction.json").unlink()
    with pytest.raises(DataError, match="grade_direction.json: listed in the bundle's manifest but missing"):
        bundle.load(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(DataError, match="not a model bundle"):
        bundle.load(folder)


def test_a_pickled_payload_in_place_of_weights_is_refused_without_running(parts, tiny_config, tmp_path):
    folder = exported(parts, tiny_config)
    marker = tmp_path / "payload-ran"
    (folder / "prm.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["prm.safetensors"] = bundle.file_hash(folder / "prm.safetensors")  # a forger fixes the manifest too
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="prm.safetensors: not a safetensors weight file"):
        bundle.load(folder)
    assert not marker.exists()


def test_training_checkpoints_load_weights_only(tmp_path, warnings_logged):
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    torch.save({"fingerprint": "f", "step": 3, "model": Payload(marker)}, folder / "last.pt")
    assert Checkpoints(folder, "f").load() is None
    assert not marker.exists() and "holds more than weights" in warnings_logged.text
    Checkpoints(folder, "f").save({"step": 4, "curve": [{"loss": 0.5}], "model": {"w": torch.ones(2)}})
    assert Checkpoints(folder, "f").load()["step"] == 4
