"""Training numerics: MixedPrecision (the CPU path is the plain step bit for bit; fp16 scales its gradients),
the fused AdamW and the EMA of the weights."""

import torch

from lvdr.training import MixedPrecision


def tiny(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def batches(n=4):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(5, 6, generator=g), torch.randn(5, 1, generator=g)) for _ in range(n)]


def test_auto_on_the_cpu_is_the_plain_step_bit_for_bit():
    plain, plain_opt = tiny()
    mixed, mixed_opt = tiny()
    precision = MixedPrecision(torch.device("cpu"), "auto")
    assert precision.dtype is None and not precision.scaler.is_enabled() and precision.state_dict() == {}
    for x, y in batches():
        loss = torch.nn.functional.mse_loss(plain(x), y)
        plain_opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
        plain_opt.step()
        with precision.autocast():
            loss = torch.nn.functional.mse_loss(mixed(x), y)
        mixed_opt.zero_grad()
        precision.step(loss, mixed_opt, mixed.parameters(), 0.5)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), mixed.state_dict().values()))


def test_fp16_scales_gradients_that_would_underflow():
    x = torch.randn(5, 6)
    grads = {}
    for scaled in (False, True):
        model, optimizer = tiny()
        precision = MixedPrecision(torch.device("cpu"), "fp16")
        assert precision.dtype == torch.float16 and precision.scaler.is_enabled()
        if not scaled:
            precision.scaler = torch.amp.GradScaler("cpu", enabled=False)
        with precision.autocast():
            out = model[0](x)  # fp16 under autocast: its gradient is fp16 too
        assert out.dtype == torch.float16
        loss = out.float().sum() * 1e-8  # a gradient of 1e-8 is below fp16's smallest subnormal
        precision.scaler.scale(loss).backward()
        precision.scaler.unscale_(optimizer)
        grads[scaled] = model[0].bias.grad.clone()
    assert torch.all(grads[False] == 0)
    torch.testing.assert_close(grads[True], torch.full_like(grads[True], 5e-8), rtol=1e-2, atol=0)


def test_an_overflowing_fp16_step_is_skipped_and_the_scale_kept_in_the_state():
    model, optimizer = tiny()
    precision = MixedPrecision(torch.device("cpu"), "fp16")
    before = [p.clone() for p in model.parameters()]
    scale = precision.scaler.get_scale()
    x, _ = batches(1)[0]
    with precision.autocast():
        loss = model(x).float().sum() * float("inf")
    precision.step(loss, optimizer, model.parameters(), 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # nothing applied
    assert precision.scaler.get_scale() == scale / 2
    resumed = MixedPrecision(torch.device("cpu"), "fp16")
    resumed.load_state_dict(precision.state_dict())  # a checkpoint carries the scale on
    assert resumed.scaler.get_scale() == scale / 2
    resumed.load_state_dict(None)  # a checkpoint from before the scaler was saved
    assert resumed.scaler.get_scale() == scale / 2


def test_fused_adamw_steps_as_the_per_tensor_adamw_does():
    from lvdr.training import adamw

    reference, _ = tiny()
    reference_opt = torch.optim.AdamW(reference.parameters(), lr=1e-2, weight_decay=0.01, foreach=False)
    fused, _ = tiny()
    fused_opt = adamw(fused.parameters(), 1e-2, 0.01)
    assert fused_opt.defaults["fused"]
    for x, y in batches():
        for model, opt in ((reference, reference_opt), (fused, fused_opt)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    for a, b in zip(reference.parameters(), fused.parameters()):
        torch.testing.assert_close(a, b)
    assert not all(torch.equal(a, b) for a, b in zip(tiny()[0].parameters(), fused.parameters()))  # it did step


def test_ema_moves_each_weight_towards_the_model_by_one_minus_its_decay():
    from lvdr.training import EMA

    model, _ = tiny()
    ema = EMA(model, decay=0.9)
    start = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)  # first update: the warm-up decay (1 + 1) / (10 + 1)
    decay = 2 / 11
    for before, after, target in zip(start, ema.model.parameters(), model.parameters()):
        torch.testing.assert_close(after, before + (1 - decay) * (target - before))
