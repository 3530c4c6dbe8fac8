"""Noise2Noise: pairs, losses, training/apply/save/load, stacks, stop and bad input (tiny configs)."""
import numpy as np
import pytest
import torch

from napari_ssl_restore import denoise_noise2noise, restore
from napari_ssl_restore.core.models import load_checkpoint
from napari_ssl_restore.methods import noise2noise as n2n
from napari_ssl_restore.nets.unet import UNet, pad_to_multiple

TINY = {"features": 8, "depth": 2, "patch_size": 16, "batch_size": 4, "device": "cpu"}


@pytest.fixture
def pair():
    from napari_ssl_restore.data import noisy_pair

    return noisy_pair(size=40, sigma=0.15)


def test_unet_paper_size_and_padding():
    assert 0.9e6 < sum(p.numel() for p in UNet(1, 1, 48, 5).parameters()) < 1.1e6
    x, (h, w) = pad_to_multiple(torch.rand(1, 2, 37, 50), 8)
    assert x.shape[-2:] == (40, 56) and (h, w) == (37, 50)
    assert UNet(2, 2, 8, 3)(x).shape == x.shape
    # the residual variant (a denoiser candidate) returns x - predicted noise, and saves as such
    from napari_ssl_restore.core.models import build, checkpoint

    res = UNet(2, 2, 8, 3, residual=True)
    torch.nn.init.zeros_(res.tail.weight)
    torch.nn.init.zeros_(res.tail.bias)
    torch.testing.assert_close(res(x), x)
    assert "residual" not in UNet(2, 2, 8, 3).config  # earlier checkpoints' configs unchanged
    again = build(checkpoint(res, architecture="unet", normalization={}, provenance={}))
    assert again.residual and torch.equal(again(x), x)
    with pytest.raises(ValueError, match="in_channels must equal"):
        UNet(1, 2, 8, 3, residual=True)


def test_losses():
    a, b = torch.zeros(10), torch.tensor([0.0] * 9 + [3.0])
    assert float(n2n.n2n_loss(a, b, "l2")) == pytest.approx(0.9)
    assert float(n2n.n2n_loss(a, b, "l1")) == pytest.approx(0.3)
    # annealed L0: L2 at the start; near the end it prefers the mode (0) over the mean (0.3)
    assert float(n2n.n2n_loss(a, b, "l0", 0.0)) == pytest.approx(0.9, rel=1e-3)
    mean = torch.full((10,), 0.3)
    assert float(n2n.n2n_loss(mean, b, "l2")) < float(n2n.n2n_loss(a, b, "l2"))
    assert float(n2n.n2n_loss(a, b, "l0", 0.95)) < float(n2n.n2n_loss(mean, b, "l0", 0.95))


def test_make_pairs_time_target_z():
    # T=3, Z=2: planes numbered T-major; a second acquisition's planes follow the image's
    pairs, how = n2n.make_pairs("TZ", (3, 2), "auto", False)
    assert how == "time" and len(pairs) == 2 * 2 * 2
    assert (0, 2) in pairs and (2, 0) in pairs  # (t0, z0) <-> (t1, z0)
    pairs, how = n2n.make_pairs("TZ", (3, 2), "z", False)
    assert how == "z" and (0, 1) in pairs and len(pairs) == 3 * 2
    pairs, how = n2n.make_pairs("", (), "auto", True)
    assert how == "target" and pairs == [(0, 1), (1, 0)]
    with pytest.raises(ValueError, match="needs pairs"):
        n2n.make_pairs("", (), "auto", False)
    with pytest.raises(ValueError, match="at least 2 planes"):
        n2n.make_pairs("TZ", (1, 2), "time", False)


def test_sampler_aligns_pairs_on_the_device():
    from napari_ssl_restore.engine.train import PatchSampler

    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.random((1, 1, 20, 24)).astype(np.float32))
    field = torch.cat([base, base + 1])
    sampler = PatchSampler([field, field], [(0, 1)], 8, rng, augment=True)
    src, tgt = sampler(16)
    assert src.shape == (16, 1, 8, 8)
    torch.testing.assert_close(tgt, src + 1)  # same window, same flip and rotation


def test_patch_larger_than_the_image(pair):
    with pytest.raises(ValueError, match="larger than the image"):
        restore(pair["image"][:12, :12], "noise2noise", target=pair["target"][:12, :12], steps=2,
                **TINY)


def test_lr_ramp_down():
    from napari_ssl_restore.engine.train import cosine_rampdown

    factor = cosine_rampdown(100, 0.3)
    assert factor(10) == 1.0 and factor(70) == 1.0
    assert factor(100) == pytest.approx(0.0, abs=1e-9)
    assert 0 < factor(85) < 1


def test_train_reduces_error_deterministic_no_inplace(pair):
    before = pair["image"].copy()
    a = denoise_noise2noise(pair["image"], target=pair["target"], steps=120, seed=3, **TINY)
    b = denoise_noise2noise(pair["image"], target=pair["target"], steps=120, seed=3, **TINY)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pair["image"], before)
    mse = lambda x: float(np.mean((x - pair["clean"]) ** 2))  # noqa: E731
    assert mse(a) < mse(pair["image"])


def test_save_load_apply_round_trip(pair, tmp_path):
    path = tmp_path / "model.pt"
    out = restore(pair["image"], "noise2noise", target=pair["target"], steps=10,
                  save_model=str(path), full_output=True, **TINY)
    assert out["provenance"]["model_saved"] == str(path)
    ckpt = load_checkpoint(path)
    assert ckpt["config"]["features"] == 8 and ckpt["provenance"]["steps"] == 10
    applied = restore(pair["image"], "noise2noise", mode="apply", model=str(path),
                      device="cpu", features=8, depth=2, patch_size=16)
    np.testing.assert_allclose(applied, out["image"], atol=1e-5)
    # apply to a stack of new frames: no pairs needed
    stack = np.stack([pair["target"], pair["image"]])
    assert restore(stack, "noise2noise", axes="ZYX", mode="apply", model=str(path),
                   device="cpu", depth=2, patch_size=16).shape == stack.shape
    # fine-tune from it
    ft = restore(pair["image"], "noise2noise", target=pair["target"], steps=5, model=str(path),
                 full_output=True, **TINY)
    assert ft["provenance"]["model_loaded"] == str(path)


@pytest.mark.parametrize("axes,shape", [("TYX", (3, 32, 32)), ("TZYX", (2, 2, 32, 32)),
                                        ("TYXC", (2, 32, 32, 3))])
def test_time_lapse_pairs_and_output_shape(axes, shape):
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 1000).astype(np.uint16)
    out = restore(data, "noise2noise", axes=axes, steps=5, full_output=True, **TINY)
    assert out["image"].shape == data.shape and out["image"].dtype == np.uint16
    assert out["provenance"]["pairing"] == "time"


def test_tiled_prediction_matches_single_tile(pair):
    from napari_ssl_restore.core.models import build
    from napari_ssl_restore.engine.predict import Predictor

    ckpt_out = restore(pair["image"], "noise2noise", target=pair["target"], steps=5,
                       full_output=True, **TINY)
    net = build(ckpt_out["model"]).eval()
    plane = np.random.default_rng(1).random((1, 50, 44, 1)).astype(np.float32)
    big = Predictor(net, "cpu", tile=512, multiple=2 ** net.depth)(plane)[0]
    small = Predictor(net, "cpu", tile=24, overlap=8, multiple=2 ** net.depth)(plane)[0]
    # interior agrees closely; seams are blended
    assert np.abs(big - small)[8:-8, 8:-8].mean() < 0.02


def test_stop_keeps_model_trained_so_far(pair):
    steps = []

    def should_stop():
        return bool(steps) and steps[-1].metrics.get("step", 0) >= 60

    out = restore(pair["image"], "noise2noise", target=pair["target"], steps=500,
                  preview_every=20, progress=steps.append, should_stop=should_stop,
                  full_output=True, **TINY)
    prov = out["provenance"]
    assert prov["stopped"] and 60 <= prov["trained_steps"] < 500
    assert out["model"] is not None and out["image"].shape == pair["image"].shape


def test_stop_in_the_first_steps_keeps_nothing(pair):
    from napari_ssl_restore.core.progress import Cancelled

    with pytest.raises(Cancelled, match="before the network had learned anything"):
        restore(pair["image"], "noise2noise", target=pair["target"], steps=500,
                should_stop=lambda: True, **TINY)


@pytest.mark.parametrize("kw,msg", [
    ({"patch_size": 18}, "multiple of 2\\*\\*depth"),
    ({"mode": "apply"}, "needs model="),
    ({"model": "/nonexistent/model.pt"}, "not found"),
    ({"loss": "l3"}, "one of"),
    ({"target": np.zeros((5, 5), np.float32)}, "same shape"),
])
def test_bad_input(kw, msg, pair):
    args = dict(TINY, steps=2)
    args.update(kw)
    with pytest.raises((ValueError, FileNotFoundError), match=msg):
        restore(pair["image"], "noise2noise", **args)


def test_single_image_without_pairs_is_a_clear_error(pair):
    with pytest.raises(ValueError, match="needs pairs of noisy images"):
        restore(pair["image"], "noise2noise", steps=2, **TINY)


def test_not_a_model_file(tmp_path, pair):
    bad = tmp_path / "bad.pt"
    torch.save({"hello": 1}, bad)
    with pytest.raises(ValueError, match="not a napari-ssl-restore model"):
        restore(pair["image"], "noise2noise", mode="apply", model=str(bad), **TINY)


def test_held_out_strip_is_never_trained_on():
    field = torch.arange(2 * 1 * 64 * 40, dtype=torch.float32).reshape(2, 1, 64, 40)
    params = n2n.Params(patch_size=16, depth=2, features=8)
    (src, tgt), rows = n2n.held_out_strip(field, [(0, 1), (1, 0)], params, 4)
    assert rows == 56 and src.shape == (2, 1, 8, 40)  # 1/8 of 64 rows, a multiple of 4
    assert torch.equal(src[0], field[0, :, 56:]) and torch.equal(tgt[0], field[1, :, 56:])
    # no room for a strip and a training patch above it: no validation
    assert n2n.held_out_strip(field[..., :18, :], [(0, 1)], params, 4) == (None, 18)
    assert n2n.held_out_strip(field, [(0, 1)], n2n.Params(validation_fraction=0, patch_size=16,
                                                          depth=2), 4) == (None, 64)


def test_default_stops_on_the_held_out_loss_and_keeps_the_best(pair, monkeypatch):
    monkeypatch.setattr(n2n, "RAMP_STEPS", 300)  # a shorter ramp-down: the rule, in less time
    steps = []
    out = restore(pair["image"], "noise2noise", target=pair["target"], patience=100,
                  progress=steps.append, full_output=True, **TINY)
    prov = out["provenance"]
    history = prov["held_out_loss"]
    assert prov["stop_rule"] == "held-out loss" and prov["trained_steps"] < n2n.MAX_AUTO_STEPS
    assert [it for it, _ in history] == list(range(50, prov["trained_steps"] + 1, 50))
    best = min(history, key=lambda h: h[1])
    assert prov["kept"] == f"step {best[0]}" and prov["best_step"] == best[0]
    # the plateau (100 checks' worth of steps without a better loss) starts the ramp-down, which
    # ends the run RAMP_STEPS later
    ramp = prov["annealed_from"]
    before = [v for it, v in history if it <= ramp - 100]
    assert min(before) <= min(v for it, v in history if ramp - 100 < it <= ramp)
    assert prov["trained_steps"] == ramp + n2n.RAMP_STEPS
    # the ramp-down started from the best averaged weights of the constant-rate phase
    assert prov["rolled_back_to"] == min((h for h in history if h[0] <= ramp),
                                         key=lambda h: h[1])[0]
    assert prov["time_capped"] is False
    assert history[0][1] > best[1]  # it learned something measurable on the strip
    # the progress reports carry the curve; the quality block reads the held-out loss
    assert any("held-out" in s.message for s in steps)
    assert "held-out loss" in prov["quality"]["verdict"]
    # a fixed count keeps the paper's schedule and still reports the held-out loss
    fixed = restore(pair["image"], "noise2noise", target=pair["target"], steps=60,
                    full_output=True, **TINY)["provenance"]
    assert fixed["stop_rule"] == "fixed count" and fixed["trained_steps"] == 60
    assert fixed["kept"] == "final" and len(fixed["held_out_loss"]) == 1


def test_the_time_budget_starts_the_ramp_down_in_time(monkeypatch):
    """A slow machine: the step rate measured from the first check says the budget ends before the
    step cap, so the ramp-down starts early enough to end within it (and never before the step at
    which that is known); a plateau or the cap still win when they come first."""
    monkeypatch.setattr(n2n, "RAMP_STEPS", 100)
    clock = {"t": 0.0}
    monkeypatch.setattr(n2n.time, "perf_counter", lambda: clock["t"])
    anneal = n2n._Anneal(total=2200, patience=10_000, seconds=10.0)
    ends = []
    for it in range(50, 2201, 50):
        clock["t"] = 0.1 * it  # 0.1 s a step
        if anneal.finished(it, best_step=it):
            ends.append(it)
            break
    # first check at 50 (t=5); at 100: 0.1 s/step, 5 s left = 50 steps -> 150, but the ramp cannot
    # start before step 100, so it ends at 200
    assert anneal.timed and ends == [200] and anneal.start() == 100
    assert anneal(100) == 1.0 and 0 < anneal(150) < 1 and anneal(200) == 0.0
    fast = n2n._Anneal(total=400, patience=10_000, seconds=1e6)  # the cap comes first
    assert not any(fast.finished(it, it) for it in range(50, 400, 50)) and fast.finished(400, 400)
    assert not fast.timed and fast.start() == 300
    # the budget lowered the cap (to 2050 steps), but a plateau at 300 began the ramp: not timed
    clock["t"] = 0.0
    flat = n2n._Anneal(total=2200, patience=200, seconds=200.0)
    for it in range(50, 2201, 50):
        clock["t"] = 0.1 * it
        if flat.finished(it, best_step=100):
            break
    assert flat.total == 2050 and flat.plateau == 300 and it == 400 and not flat.timed


def test_a_run_ended_by_the_time_budget_says_so(pair, monkeypatch):
    """Through restore: a budget the machine cannot meet starts the ramp-down at the second check
    (the first that knows the step rate), and the quality verdict tells the user."""
    monkeypatch.setattr(n2n, "RAMP_STEPS", 100)
    monkeypatch.setattr(n2n, "MAX_AUTO_SECONDS", 1e-6)
    prov = restore(pair["image"], "noise2noise", target=pair["target"], full_output=True,
                   **TINY)["provenance"]
    assert prov["time_capped"] is True and prov["stop_rule"] == "held-out loss"
    assert prov["annealed_from"] == 2 * n2n.CHECK_EVERY and prov["trained_steps"] == 200
    assert prov["rolled_back_to"] is None  # no plateau began this ramp
    assert "time budget after 200 steps" in prov["quality"]["verdict"]
    # a Stop before the ramp-down is a Stop, whatever the budget had planned: a clock of 1 s per
    # check and an 11 s budget plan the ramp for steps 500-600; the user stops at step 150
    ticks = iter(range(10**6))
    monkeypatch.setattr(n2n.time, "perf_counter", lambda: float(next(ticks)))
    monkeypatch.setattr(n2n, "MAX_AUTO_SECONDS", 11.0)
    seen = []
    stopped = restore(pair["image"], "noise2noise", target=pair["target"], full_output=True,
                      progress=seen.append, preview_every=10,
                      should_stop=lambda: bool(seen) and seen[-1].metrics.get("step", 0) >= 150,
                      **TINY)["provenance"]
    assert stopped["stopped"] and 150 <= stopped["trained_steps"] < 500
    assert stopped["annealed_from"] == 500  # the ramp the budget had planned
    assert not stopped["time_capped"] and "time budget" not in stopped["quality"]["verdict"]


def test_the_dock_draws_the_held_out_curve():
    from napari_ssl_restore._napari.widgets import sparkline

    assert sparkline([3.0, 2.0, 1.0, 1.0]) == "█▅▁▁"
    assert sparkline([1.0, 1.0]) == "▁▁"
