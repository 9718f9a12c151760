"""Stage 1: the DiffAE trains, inverts, resumes exactly, and its latent cache lines up with the slices."""

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from lvdr.data import load_latents, to_model_range
from lvdr.diffae.cache import build_cache
from lvdr.diffae.model import DiffAE
from lvdr.diffae.sampling import decode, encode_noise
from lvdr.diffae.train import load_model, train
from lvdr.files import read_json
from lvdr.training import lr_factor


def blobs(n=16, size=16, seed=0):
    """Bright discs of random size and place on a dark background, in [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        cy, cx, r = rng.uniform(5, 11, 2).tolist() + [rng.uniform(2, 5)]
        images.append(np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 0.8, -0.8))
    return torch.tensor(np.stack(images)[:, None], dtype=torch.float32)


def test_model_shapes_and_conditioning(diffae_config):
    model = DiffAE(1, 16, diffae_config)
    x = torch.randn(3, 1, 16, 16)
    z, tokens = model.encode(x)
    assert z.shape == (3, 16) and tokens.shape == (3, 64, 16)  # 8 x 8 grid of level-2 features
    t = torch.tensor([0, 500, 999])
    eps = model.decoder(x, t, z)
    assert eps.shape == x.shape
    torch.nn.init.normal_(model.decoder.out[-1].weight)  # leave the zero-initialised output
    torch.nn.init.normal_(model.decoder.down_levels[0].blocks[0].conv2.weight)
    assert not torch.allclose(model.decoder(x, t, z), model.decoder(x, t, z + 1.0)), "z must change the output"


@pytest.mark.parametrize("pool", ["avg", "avgmax"])
def test_unit_z_init_scales_z_to_unit_spread_and_nothing_else(diffae_config, pool):
    model = DiffAE(1, 16, {**diffae_config, "encoder_pool": pool})
    x = blobs()
    z0, tokens0 = model.encode(x)
    factor = model.encoder.init_unit_z(x)
    z1, tokens1 = model.encode(x)
    if pool == "avg":  # the default init's mean-pooled z is small (the max-pooled one is not: the maxima are not centred)
        assert factor > 1 and float(z0.std()) < 0.5
    assert float(z1.std()) == pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(z1, z0 * factor)  # the same code, in a larger unit
    torch.testing.assert_close(tokens1, tokens0)  # the tokens come before the scaled layer


def test_avgmax_z_keeps_a_feature_of_a_few_pixels_that_the_mean_dilutes(diffae_config):
    from lvdr.diffae.model import AvgMaxPool

    h = torch.zeros(2, 3, 8, 8)
    h[1, 0, 2:4, 5:7] = 1.0  # four of 64 pixels light up in one channel
    pooled = AvgMaxPool()(h).flatten(1)  # (mean, max) of each channel
    assert pooled.shape == (2, 6)
    difference = (pooled[1] - pooled[0]).tolist()
    assert difference == pytest.approx([4 / 64, 0, 0, 1.0, 0, 0])  # the mean sees 1/16 of it, the maximum all
    avg, avgmax = (DiffAE(1, 16, {**diffae_config, "encoder_pool": pool}) for pool in ("avg", "avgmax"))
    assert avgmax.encoder.out[-2].in_channels == 2 * avg.encoder.out[-2].in_channels
    z, tokens = avgmax.encode(blobs(3))
    assert z.shape == (3, diffae_config["z_dim"]) and tokens.shape == avg.encode(blobs(3))[1].shape


def fit(model, images, steps, timesteps=1000, seed=0):
    from monai.networks.schedulers import DDPMScheduler

    torch.manual_seed(seed)
    scheduler = DDPMScheduler(num_train_timesteps=timesteps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(steps):
        noise = torch.randn_like(images)
        t = torch.randint(0, timesteps, (len(images),))
        loss = torch.nn.functional.mse_loss(model(scheduler.add_noise(images, noise, t), t, images), noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_tiny_diffae_loss_falls(diffae_config):
    model = DiffAE(1, 16, {**diffae_config, "dropout": 0.0})
    losses = fit(model, blobs(), 60)
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:10])


def test_ddim_encode_then_decode_returns_the_input(diffae_config):
    # a short diffusion (T = 200) lets a tiny model learn eps well enough in seconds
    cfg = {**diffae_config, "dropout": 0.0, "timesteps": 200, "attention_resolutions": []}
    torch.manual_seed(0)
    model = DiffAE(1, 16, cfg)
    images = blobs(8)
    fit(model, images, 300, timesteps=200)
    model.eval()
    with torch.no_grad():
        z, _ = model.encode(images)
        x_t = encode_noise(model.decoder, images, z, cfg, steps=10)
        back = decode(model.decoder, x_t, z, cfg, steps=10)
    error = (back - images).pow(2).mean().item()
    other = (images.roll(1, 0) - images).pow(2).mean().item()
    assert error < 0.1 * other, (error, other)
    assert x_t.std() > 0.5, "x_T should look like noise, not like the image"


def test_training_loop_writes_outputs_and_resume_matches(spider_prepared, diffae_config, tmp_path, kill_at, caplog):
    from kill import Killed

    # with a warm-up and cosine decay, which a resumed run must pick up at its step
    # and z initialised at unit scale, which must not change what a resumed run computes
    diffae_config = {**diffae_config, "unit_z_init": True,
                     "train": {**diffae_config["train"], "schedule": "cosine", "warmup_fraction": 0.34}}
    full = train(diffae_config, spider_prepared, tmp_path / "full", seed=1, device_name="cpu")
    kill_at(4)  # mid-way between the checkpoints at steps 3 and 6
    with pytest.raises(Killed):
        train(diffae_config, spider_prepared, tmp_path / "resumed", seed=1, device_name="cpu")
    caplog.set_level(logging.INFO)
    resumed = train(diffae_config, spider_prepared, tmp_path / "resumed", seed=1, device_name="cpu")
    assert "(step 3)" in caplog.text and "z initialised at unit scale" in caplog.text
    a = torch.load(full, weights_only=False)["state_dict"]
    b = torch.load(resumed, weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    curve = pd.read_csv(tmp_path / "resumed" / "curve.csv")
    assert len(curve) == 6
    expected = [diffae_config["train"]["lr"] * lr_factor(step, 6, 0.34, "cosine") for step in range(6)]
    assert curve.lr.tolist() == pytest.approx(expected) and expected[0] < expected[1] > expected[-1]
    with np.load(tmp_path / "full" / "reconstructions.npz") as arrays:
        assert arrays["original"].shape == arrays["ddim"].shape == arrays["fresh_noise"].shape
        assert arrays["original"].shape[0] == 2


def test_several_inits_keep_the_best_probed_one_and_train_it_on_as_a_single_run_would(spider_prepared, diffae_config,
                                                                                       tmp_path, kill_at, caplog):
    """diffae.inits: each init trains init_probe_steps steps, the training-split probe picks one, and that one
    trains on exactly as a single run from its seed; a run killed after the choice resumes the kept init."""
    import re

    from kill import Killed

    cfg = {**diffae_config, "inits": 3, "init_probe_steps": 2}
    caplog.set_level(logging.INFO)
    chosen = train(cfg, spider_prepared, tmp_path / "three", seed=1, device_name="cpu")
    probes = re.findall(r"init \d of 3 \(seed (\d+)\) after 2 steps: training-split grade probe MAE (\S+)", caplog.text)
    assert [int(s) for s, _ in probes] == [1, 1001, 2001]
    kept = int(re.search(r"kept the init with seed (\d+)", caplog.text).group(1))
    errors = [float(e) for _, e in probes if e != "n/a"]
    if errors:
        assert float(dict(probes)[str(kept)]) == min(errors)
    single = train({**diffae_config, "inits": 1}, spider_prepared, tmp_path / "single", seed=kept, device_name="cpu")
    a, b = (torch.load(path, weights_only=False)["state_dict"] for path in (chosen, single))
    assert all(torch.equal(a[k], b[k]) for k in a)
    kill_at(4)  # after the choice (step 2) and the checkpoint at step 3
    with pytest.raises(Killed):
        train(cfg, spider_prepared, tmp_path / "resumed", seed=1, device_name="cpu")
    resumed = torch.load(train(cfg, spider_prepared, tmp_path / "resumed", seed=1, device_name="cpu"),
                         weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], resumed[k]) for k in a)


def test_the_init_probe_reads_the_grade_from_latents_that_carry_it():
    from lvdr.diffae.probe import grade_error

    rng = np.random.default_rng(0)
    grade = np.repeat(np.arange(5), 8)
    patient = np.arange(len(grade)) // 2
    noise = rng.normal(size=(len(grade), 6))
    informative = noise + 3 * np.eye(6)[grade]  # each grade its own direction in z
    assert grade_error(informative, grade, patient, 0) < 0.2 < grade_error(noise, grade, patient, 0)
    assert grade_error(noise, np.zeros_like(grade), patient, 0) is None  # one grade: nothing to probe


def test_checkpoint_of_another_config_is_not_resumed(spider_prepared, diffae_config, tmp_path, warnings_logged):
    train(diffae_config, spider_prepared, tmp_path, seed=1, device_name="cpu")
    other = {**diffae_config, "z_dim": 8}
    train(other, spider_prepared, tmp_path, seed=1, device_name="cpu")
    assert "written for another configuration" in warnings_logged.text
    assert load_model(tmp_path / "model.pt")[1]["z_dim"] == 8


def test_cache_rows_align_with_the_slice_table(spider_prepared, diffae_config, tmp_path, caplog):
    import logging

    from lvdr.data import load_prepared

    model_path = train(diffae_config, spider_prepared, tmp_path / "dae", seed=1, device_name="cpu")
    build_cache(model_path, spider_prepared, tmp_path / "latents", batch_size=5, device_name="cpu")
    z, tokens = load_latents(tmp_path / "latents")
    data = load_prepared(spider_prepared)
    assert len(z) == len(tokens) == len(data.table)
    model, _ = load_model(model_path)
    rows = [0, 7, len(z) - 1]
    with torch.no_grad():
        z_direct, tokens_direct = model.encode(to_model_range(data.slices[rows]))
    np.testing.assert_allclose(z[rows], z_direct.numpy(), atol=1e-4)
    np.testing.assert_allclose(tokens[rows], tokens_direct.numpy(), atol=1e-2)
    before = (tmp_path / "latents" / "z.npy").stat().st_mtime_ns
    caplog.set_level(logging.INFO)
    build_cache(model_path, spider_prepared, tmp_path / "latents", batch_size=5, device_name="cpu")
    assert "up to date" in caplog.text
    assert (tmp_path / "latents" / "z.npy").stat().st_mtime_ns == before
    on_disk = ((tmp_path / "latents" / "z.npy").stat().st_size + (tmp_path / "latents" / "tokens.npy").stat().st_size) / 1e9
    assert read_json(tmp_path / "latents" / "meta.json")["size_gb"] == pytest.approx(on_disk, abs=1e-4)
    caplog.clear()
    build_cache(model_path, spider_prepared, tmp_path / "small", batch_size=5, device_name="cpu", budget_gb=1e-9)
    assert "above config key 'cache.budget_gb'" in caplog.text


def test_the_ddim_round_trip_is_exact_when_no_step_clips(diffae_config):
    """With an eps-model that ignores x, deterministic DDIM is a chain of invertible affine maps, so
    encode-then-decode gives the input back (up to the chain's start at t = 0 rather than at the clean
    image: an offset of eps * sqrt(1 - alpha_bar_0) = 0.007 here). Neither chain may clip its x0
    estimate: with a real model's imperfect eps, clipping breaks the inverse (demo SPIDER: 17.7 dB)."""
    from lvdr.diffae.sampling import ddim

    class ConstantEps(torch.nn.Module):
        def forward(self, x, t, z):
            return torch.full_like(x, 0.7)

    cfg = {**diffae_config, "timesteps": 1000, "beta_schedule": "linear_beta"}
    images = blobs(4)
    x_t = encode_noise(ConstantEps(), images, None, cfg, steps=20)
    back = decode(ConstantEps(), x_t, None, cfg, steps=20)
    assert (back - images).abs().max().item() < 0.01
    assert x_t.std() < 0.1 * images.std()  # at t = T the image is gone: the chain really ran
    assert ddim(cfg, 20)[0].clip_sample is False and ddim(cfg, 20, clip=True)[0].clip_sample is True
