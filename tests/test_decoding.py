"""Decoded reasoning states and counterfactuals (lvdr.explain.decoding, lvdr.explain.counterfactuals).

The sign logic is checked with parts whose behaviour is known exactly: a decoder whose estimate of x0
is always a flat image of brightness tanh(z_0) (so any x_T decodes to it), an encoder that reads the
brightness back, and a latent classifier and a PRM head that are known linear maps of it.
"""

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler
from torch import nn

from lvdr.baselines.latent import full_probs, load_linear, make_classifier, save_linear
from lvdr.diffae.model import DiffAE
from lvdr.explain.counterfactuals import counterfactuals, grade_direction, requested, search
from lvdr.explain.decoding import decode_latents, decoded_states, stochastic_spread
from lvdr.explain.verdicts import counterfactual_verdict, decoding_verdict
from lvdr.prm.model import PRM

D = 4


class FlatDecoder(nn.Module):
    """Predicts the noise that makes DDIM's x0 estimate a flat image of value tanh(z_0), whatever x_t."""

    def __init__(self, cfg):
        super().__init__()
        self.register_buffer("ab", DDIMScheduler(cfg["timesteps"], schedule=cfg["beta_schedule"]).alphas_cumprod)

    def forward(self, x, t, z):
        target = torch.tanh(z[:, :1])[:, :, None, None].expand_as(x)
        ab = self.ab[t][:, None, None, None]
        return (x - ab.sqrt() * target) / (1 - ab).sqrt()


class Known(nn.Module):
    """A stand-in DiffAE: FlatDecoder, and an encoder whose z_0 is the image's mean intensity in [-1, 1]."""

    def __init__(self, cfg):
        super().__init__()
        self.decoder = FlatDecoder(cfg)

    def encode(self, x):
        z = torch.zeros(len(x), D)
        z[:, 0] = x.mean((1, 2, 3))
        return z, None


class Brightness:
    """A latent classifier that is a known linear map: P(positive) = sigmoid(sign * 8 * z_0)."""

    classes_ = np.array([0, 1])

    def __init__(self, sign):
        self.sign = sign

    def predict_proba(self, z):
        p = 1 / (1 + np.exp(-self.sign * 8 * z[:, 0]))
        return np.stack([1 - p, p], 1)


class Head(nn.Module):
    """A PRM whose grading head says positive where z_0 > 0."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(D, 2)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.bias.zero_()
            self.head.weight[1, 0] = 10.0

    def grade(self, z):
        return self.head(z)


@pytest.fixture
def known(diffae_config):
    cfg = {**diffae_config, "timesteps": 100}
    rng = np.random.default_rng(0)
    trajs = []
    for i in range(12):
        z = rng.normal(0, 0.3, (5, D)).astype(np.float32)
        z[:, 0] = np.linspace(0, 0.8 if i % 2 else -0.8, 5)  # positive and negative sequences
        trajs.append({"seq_id": f"s{i}", "grade": i % 2, "z": z, "row": np.arange(5)})
    x_t = torch.randn(len(trajs), 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return cfg, Known(cfg), Head(), trajs, x_t


def test_a_flat_decoder_decodes_to_its_target(known):
    cfg, diffae, _, trajs, x_t = known
    z = np.stack([t["z"][-1] for t in trajs])
    images = decode_latents(diffae, x_t, z, cfg, steps=10)
    np.testing.assert_allclose(images.mean((1, 2, 3)), (np.tanh(z[:, 0]) + 1) / 2, atol=1e-4)


def test_decoded_states_agree_with_a_classifier_that_reads_them_right(known):
    cfg, diffae, prm, trajs, x_t = known
    right = decoded_states(prm, diffae, Brightness(+1), trajs, x_t, cfg, steps=10)
    assert right["agreement_last"] == 1.0 and right["p_last"] < 0.05
    assert decoding_verdict(right)[0] == "supports"
    assert len(right["images"]) == len(trajs) and right["images"][0].shape == (5, 1, 8, 8)
    wrong = decoded_states(prm, diffae, Brightness(-1), trajs, x_t, cfg, steps=10)
    assert wrong["agreement_last"] == 0.0 and decoding_verdict(wrong)[0] == "does not support"
    # the decoded state at step T is the decode of z_sem from the same x_T
    z_sem = np.stack([t["z"][-1] for t in trajs])
    np.testing.assert_array_equal(np.stack([i[-1] for i in right["images"]]), decode_latents(diffae, x_t, z_sem, cfg, 10))


def test_counterfactual_validity_follows_the_classifier_sign(known):
    cfg, diffae, prm, trajs, x_t = known
    direction = np.eye(D)[0]
    masks = np.zeros((len(trajs), 8, 8), np.uint8)
    masks[:, 2:6, 2:6] = 1
    good = counterfactuals(prm, diffae, Brightness(+1), trajs, x_t, direction, 0.05, cfg, 10, masks)
    one = good["moves"][1]
    assert one["n_reached"] == len(trajs) and one["valid_share"] == 1.0
    assert counterfactual_verdict(good)[0] == "supports"
    assert good["moves"][2]["n_requested"] == 0  # a binary task has no second grade to move to
    # every sequence moved towards the other class: up from negative, down from positive
    for seq in good["per_sequence"]:
        assert seq["sign"] == (1 if seq["predicted"] == 0 else -1) and np.sign(seq["alpha"][1]) == seq["sign"]
    # a flat change: the same inside the mask and out
    assert one["change_inside"] == pytest.approx(one["change_outside"], rel=1e-4) and one["change_all"] > 0
    bad = counterfactuals(prm, diffae, Brightness(-1), trajs, x_t, direction, 0.05, cfg, 10, masks)
    assert bad["moves"][1]["valid_share"] == 0.0 and counterfactual_verdict(bad)[0] == "does not support"
    # step 0 is the reconstruction: the decode of z_sem itself
    z_sem = np.stack([t["z"][-1] for t in trajs])
    np.testing.assert_array_equal(good["images"][0], decode_latents(diffae, x_t, z_sem, cfg, 10))


def test_a_direction_the_head_ignores_never_reaches_another_grade(known):
    _, _, prm, trajs, _ = known
    found = search(prm, np.stack([t["z"][-1] for t in trajs]), np.eye(D)[1], 0.05)
    assert all(f["alpha"][1] is None for f in found)


def test_requested_moves_stay_on_the_scale():
    assert requested(0, 5) == (1, [1, 2]) and requested(2, 5) == (1, [1, 2])
    assert requested(3, 5) == (-1, [1, 2]) and requested(4, 5) == (-1, [1, 2])
    assert requested(0, 2) == (1, [1]) and requested(1, 2) == (-1, [1])


def test_the_grade_direction_points_from_healthy_to_diseased():
    rng = np.random.default_rng(0)
    grades = rng.integers(0, 5, 300)
    z = rng.normal(0, 1, (300, 6))
    z[:, 2] += 3.0 * (grades > 0)  # grade 0 and the rest differ along axis 2 only
    w = grade_direction(z, grades)
    assert np.argmax(np.abs(w)) == 2 and w[2] > 0 and np.isclose(np.linalg.norm(w), 1)
    with pytest.raises(ValueError, match="grade 0 and above"):
        grade_direction(z, np.ones(300, int))


def test_decoding_is_deterministic_and_stochastic_decodes_are_seeded(diffae_config):
    torch.manual_seed(0)
    model = DiffAE(1, 16, diffae_config).eval()
    x_t = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    z = np.random.default_rng(0).normal(size=(3, diffae_config["z_dim"])).astype(np.float32)
    np.testing.assert_array_equal(decode_latents(model, x_t, z, diffae_config, 5), decode_latents(model, x_t, z, diffae_config, 5))
    a = stochastic_spread(model, x_t, z, diffae_config, 5, samples=3, eta=1.0, seed=4)
    b = stochastic_spread(model, x_t, z, diffae_config, 5, samples=3, eta=1.0, seed=4)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 1, 16, 16) and a.max() > 0
    assert stochastic_spread(model, x_t, z, diffae_config, 5, samples=3, eta=0.0, seed=4).max() < 1e-5  # batch rounding only


def test_the_last_step_latent_is_z_sem_whatever_the_padding():
    cfg = {"slots": 4, "blocks": 1, "heads": 2, "dropout": 0.0, "stochastic_depth": 0.0, "memory_update": "gru",
           "gru_keep_bias": 1.0, "queries": 2, "slot_dropout": 0.0}
    torch.manual_seed(0)
    model = PRM(6, 4, 8, 3, cfg).eval()
    tokens, depth = torch.randn(2, 5, 4, 6), torch.arange(5.0).expand(2, 5)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    with torch.no_grad():
        out = model(tokens, depth, mask, latents=True)
    torch.testing.assert_close(out["z"][1, 2], out["z_sem"][1])
    torch.testing.assert_close(out["z"][0, 4], out["z_sem"][0])


def test_the_kept_latent_classifier_reloads_to_the_same_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(120, 5)), rng.integers(0, 3, 120)
    fitted = make_classifier("diffae_lr", 0.1, 1000, 0, y).fit(z, y)
    save_linear(fitted, tmp_path / "classifier.json", 0.1, 4)
    loaded, num_classes = load_linear(tmp_path / "classifier.json")
    assert num_classes == 4
    np.testing.assert_allclose(full_probs(loaded, z, 4), full_probs(fitted, z, 4), rtol=1e-10)
    binary = make_classifier("diffae_lr", 1.0, 1000, 0, y > 0).fit(z, (y > 0).astype(int))
    save_linear(binary, tmp_path / "binary.json", 1.0, 2)
    np.testing.assert_allclose(full_probs(load_linear(tmp_path / "binary.json")[0], z, 2), full_probs(binary, z, 2), rtol=1e-10)
