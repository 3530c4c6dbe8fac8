"""Cycle-Dehaze and disentangled deblurring: the pyramid, the shared feature network, training
steps, save/apply, Stop, errors (tiny configs, CPU)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_ssl_restore import deblur_disentangled, dehaze_cycle, restore
from napari_ssl_restore.core.progress import Cancelled

TINY = {"features": 4, "blocks": 1, "disc_features": 4, "patch_size": 16, "batch_size": 1,
        "check_every": 5, "device": "cpu"}


@pytest.fixture(scope="module")
def hazy():
    from napari_ssl_restore.data import hazy_fields

    s = hazy_fields(n=2, size=40, examples=2)
    return s["image"], s["clean"]


@pytest.fixture(scope="module")
def blurred():
    from napari_ssl_restore.data import blurred_fields

    s = blurred_fields(n=2, size=40, examples=2, kinds=["gaussian"])
    return s["image"], s["clean"]


def test_laplacian_pyramid_is_exact_and_carries_the_detail():
    from napari_ssl_restore.methods.cycle_dehaze import coarse, pyramid_levels, pyramid_upsample

    assert [pyramid_levels(hw, 256) for hw in [(256, 100), (257, 10), (1024, 2048)]] == [0, 1, 3]
    x = torch.rand(1, 2, 37, 50)
    np.testing.assert_allclose(pyramid_upsample(coarse(x, 2), x, 2), x, atol=1e-5)
    # a coarse result shifted by a constant: the output is the input shifted by that constant
    out = pyramid_upsample(coarse(x, 2) + 0.25, x, 2)
    np.testing.assert_allclose(out, x + 0.25, atol=1e-5)


def test_perceptual_features_come_from_the_shipped_network_and_pass_gradients():
    from napari_ssl_restore.engine.gan_losses import perceptual_features, perceptual_loss

    features = perceptual_features("cpu")
    x = torch.rand(2, 3, 24, 24, requires_grad=True)  # channels are passed one by one
    feats = features(x)
    assert [f.shape[:2] for f in feats] == [(6, 32)] * 3
    loss = perceptual_loss(features, x, torch.zeros_like(x))
    loss.backward()
    assert loss > 0 and x.grad.abs().sum() > 0
    assert float(perceptual_loss(features, x, x).detach()) == 0.0


def test_keeper_keeps_the_last_good_snapshot_when_training_diverges():
    from napari_ssl_restore.engine.gan_parts import Keeper

    net = torch.nn.Linear(2, 2)
    keeper = Keeper(net)
    assert not keeper.check(10)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.fill_(float("nan"))
    assert keeper.check(20) and keeper.diverged and keeper.best_step == 10
    torch.testing.assert_close(keeper.restore("test").state_dict(), good)


def test_cycle_dehaze_trains_saves_applies_and_is_deterministic(hazy, tmp_path):
    image, clean = hazy
    before = image.copy()
    path = tmp_path / "g.pt"
    out = restore(image, "cycle-dehaze", axes="ZYX", clean=clean, steps=6, save_model=str(path),
                  inference="pyramid", work_size=16, full_output=True, **TINY)
    prov = out["provenance"]
    assert prov["trained_steps"] == 6 and prov["pyramid_levels"] == 2 and path.exists()
    assert out["image"].shape == image.shape and out["image"].dtype == image.dtype
    kept = out["image"] > 0  # (DCP's recovery goes below zero where it over-corrects: clipped)
    assert kept.mean() > 0.9
    np.testing.assert_allclose(out["difference"][kept],
                               image[kept].astype(np.float32) - out["image"][kept],
                               atol=1.01)  # rounding to uint16
    np.testing.assert_array_equal(image, before)
    again = dehaze_cycle(image, axes="ZYX", clean=clean, steps=6, inference="pyramid",
                         work_size=16, **TINY)
    np.testing.assert_array_equal(again, out["image"])  # same seed, same result
    applied = restore(image, "cycle-dehaze", axes="ZYX", mode="apply", model=str(path),
                      inference="pyramid", work_size=16, device="cpu")
    np.testing.assert_array_equal(applied, out["image"])
    kw = {"axes": "ZYX", "mode": "apply", "model": str(path), "device": "cpu",
          "float_output": True}
    full = restore(image, "cycle-dehaze", inference="full", **kw)
    pyramid = restore(image, "cycle-dehaze", inference="pyramid", work_size=16, **kw)
    assert full.shape == image.shape and not np.array_equal(full, pyramid)


def test_disentangled_deblur_physics_term_save_apply(blurred, tmp_path):
    image, clean = blurred
    path = tmp_path / "d.pt"
    out = restore(image, "disentangled-deblur", axes="ZYX", clean=clean, steps=6,
                  psf_sigma=2.0, save_model=str(path), full_output=True, **TINY)
    prov = out["provenance"]
    assert prov["trained_steps"] == 6 and np.isfinite(prov["physics_residual"])
    assert out["model"]["architecture"] == "content-deblurrer"
    applied = deblur_disentangled(image, axes="ZYX", mode="apply", model=str(path),
                                  device="cpu")
    np.testing.assert_array_equal(applied, out["image"])
    # a Cycle-Dehaze generator is not a deblurrer
    restore(image, "cycle-dehaze", axes="ZYX", clean=clean, steps=2,
            save_model=str(tmp_path / "g.pt"), **TINY)
    with pytest.raises(ValueError, match="not a deblurrer"):
        restore(image, "disentangled-deblur", axes="ZYX", mode="apply",
                model=str(tmp_path / "g.pt"), device="cpu")


def test_blur_kernels_start_gaussian_and_blur_each_image_with_its_own():
    from napari_ssl_restore.nets.gan import BlurKernels
    from napari_ssl_restore.physics.operators import blur, blur_each

    kernels = BlurKernels(code=8, size=15, start=1.5)
    k = kernels(torch.randn(3, 8))
    assert k.shape == (3, 15, 15)
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(3))
    assert abs(kernels.width(torch.zeros(2, 8)) - 1.5) < 0.05  # any code: the start Gaussian
    x = torch.rand(2, 2, 20, 24)
    both = torch.rand(2, 5, 5)
    both[1] = 0.0
    both[1, 2, 0], both[1, 0, 4] = 0.75, 0.25  # asymmetric: the orientation must match blur's
    both = both / both.sum((1, 2), keepdim=True)
    out = blur_each(x, both)
    torch.testing.assert_close(out[:1], blur(x[:1], both[0]))
    torch.testing.assert_close(out[1:], blur(x[1:], both[1]))


def test_blur_shapes_render_a_psf_a_defocus_disc_and_a_motion_line():
    import math

    from napari_ssl_restore.nets.gan import BlurShapes

    shapes = BlurShapes(code=8, size=15, start=1.5)
    k = shapes(torch.randn(3, 8))
    assert k.shape == (3, 15, 15) and bool((k >= 0).all())
    torch.testing.assert_close(k.sum((1, 2)), torch.ones(3))
    assert abs(shapes.width(torch.zeros(2, 8)) - 1.5) < 0.15  # any code: near the start Gaussian

    def drawn(sigma, radius, length, angle):
        with torch.no_grad():  # set the decoder's bias to these numbers, zero its weights
            inv = lambda v: math.log(math.expm1(v))  # noqa: E731
            shapes.linear.weight.zero_()
            shapes.linear.bias.copy_(torch.tensor([inv(sigma - 0.3), inv(radius), inv(length),
                                                   math.cos(angle), math.sin(angle)]))
            return shapes(torch.zeros(1, 8))[0]

    line = drawn(0.4, 0.01, 9.0, 0.0)  # horizontal: 9-10 px along x, about a row across
    rows, cols = line.sum(1), line.sum(0)
    assert rows[7] > 0.6 and rows[6:9].sum() > 0.95 and abs(rows[6] - rows[8]) < 1e-4
    assert (cols[3:12] > 0.05).all() and cols[0] + cols[14] < 0.01
    assert drawn(0.4, 0.01, 9.0, math.pi / 2).sum(0)[7] > 0.6  # turned: about a column
    disc = drawn(0.4, 3.0, 0.01, 0.0)  # radius 3: flat inside, empty outside
    assert abs(disc[7, 7] - disc[7, 9]) < 0.2 * disc[7, 7] and disc[7, 13] < 1e-3
    torch.testing.assert_close(disc, disc.T, atol=1e-4, rtol=0)  # round
    torch.nn.init.normal_(shapes.linear.weight, std=0.1)
    code = torch.randn(2, 8, requires_grad=True)  # every number gets a gradient
    (shapes(code) * torch.rand(15, 15)).sum().backward()
    assert code.grad.abs().sum() > 0 and bool((shapes.linear.bias.grad != 0).all())


def test_disentangled_deblur_physical_and_network_reblurring(blurred):
    image, clean = blurred
    out = restore(image, "disentangled-deblur", axes="ZYX", clean=clean, steps=4,
                  full_output=True, **TINY)
    prov = out["provenance"]
    assert 0.5 < prov["kernel_std"] < 5 and prov["noise"]["gain"] > 0
    shapes = prov["blur_shapes"]  # the physical family's numbers, one per training plane
    assert set(shapes) == {"sigma", "radius", "length", "angle"}
    assert len(shapes["sigma"]) == len(image) and min(shapes["sigma"]) >= 0.3
    net = restore(image, "disentangled-deblur", axes="ZYX", clean=clean, steps=4,
                  full_output=True, reblur="network", **TINY)
    assert "kernel_std" not in net["provenance"]
    assert not np.array_equal(net["image"], out["image"])


def test_stop_keeps_the_models_or_nothing_before_they_learned(hazy):
    method = "cycle-dehaze"  # the Stop path is the engine's, shared by both methods
    image, clean = hazy
    steps = []

    def should_stop():
        return bool(steps) and steps[-1].metrics.get("step", 0) >= 50

    out = restore(image, method, axes="ZYX", clean=clean, steps=400, check_every=25,
                  progress=steps.append, should_stop=should_stop, full_output=True, **{
                      k: v for k, v in TINY.items() if k != "check_every"})
    prov = out["provenance"]
    assert prov["stopped"] and 50 <= prov["trained_steps"] < 400
    assert out["model"] is not None and out["image"].shape == image.shape
    assert any(isinstance(s.preview, dict) and len(s.preview) == 2 for s in steps)
    with pytest.raises(Cancelled, match="before the generator had learned anything"):
        restore(image, method, axes="ZYX", clean=clean, steps=400, should_stop=lambda: True,
                **TINY)


@pytest.mark.parametrize("method", ["cycle-dehaze", "disentangled-deblur"])
def test_errors_name_the_fix(method, hazy):
    image, clean = hazy
    with pytest.raises(ValueError, match="clean="):
        restore(image, method, axes="ZYX", **TINY)
    with pytest.raises(ValueError, match="smaller patch_size"):
        restore(image, method, axes="ZYX", clean=np.zeros((12, 12), np.uint16), **TINY)
    with pytest.raises(ValueError, match="needs model="):
        restore(image, method, axes="ZYX", mode="apply", device="cpu")
    with pytest.raises(FileNotFoundError, match="not found"):
        restore(image, method, axes="ZYX", mode="apply", model="/nonexistent.pt", device="cpu")


def test_the_physical_translation_is_the_haze_model_under_dcp_estimates():
    from napari_ssl_restore.nets.gan import HazeTranslation

    f = HazeTranslation(np.array([0.7], np.float32))
    x, t = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8) * 0.8 + 0.1
    torch.testing.assert_close(f(x, t), x * t + 0.7 * (1 - t))  # starts at DCP's model
    torch.testing.assert_close(f(x, torch.ones_like(t)), x)  # no haze where t = 1
    with torch.no_grad():
        f.log_gamma.fill_(np.log(2.0))
        f.shift.fill_(0.1)
    torch.testing.assert_close(f(x, t), x * t**2 + 0.8 * (1 - t**2))
    assert f.describe() == {"gamma": 2.0, "airlight_shift": [0.1]}


def test_the_haze_operator_estimates_in_physical_units_as_dcp_does():
    """In a network's percentile units the haze's own floor sits at 0, which hides the haze from
    the dark channel; told where zero lies, the operator pools the airlight over the planes and
    recovers what the dcp method recovers."""
    from napari_ssl_restore.core.normalize import percentile_scaling
    from napari_ssl_restore.data import hazy_scene
    from napari_ssl_restore.physics.operators import HazeOperator

    stack = np.stack([hazy_scene(beta=b)["image"][::6, ::6] for b in (2.0, 1.0)])
    dcp = restore(stack, "dcp", axes="ZYXC", float_output=True, full_output=True)
    units = percentile_scaling(stack)
    u = units.forward(stack)

    def recovered(zero):
        op = HazeOperator(list(u), "cpu", 15, zero=zero)
        back = [units.inverse(op.recover_plane(p), as_float=True) for p in u]
        return op.airlight * units.scale + units.offset, np.stack(back)

    airlight, ours = recovered(units.zero)
    assert units.zero < -0.03
    np.testing.assert_allclose(airlight, dcp["airlight"], atol=0.5)  # 8-bit units
    assert np.abs(ours - dcp["image"]).mean() < 0.5
    assert np.abs(recovered(0.0)[1] - dcp["image"]).mean() > 2.0  # percentile zero: not DCP's


def test_cycle_dehaze_translations_physics_and_network(hazy):
    image, clean = hazy
    out = restore(image, "cycle-dehaze", axes="ZYX", clean=clean, steps=4, full_output=True,
                  **TINY)
    prov = out["provenance"]
    assert set(prov["translation"]) == {"gamma", "airlight_shift"}
    assert 0.4 < prov["airlight"][0] < 1.0 and prov["noise"]["gain"] > 0
    free = restore(image, "cycle-dehaze", axes="ZYX", clean=clean, steps=4, full_output=True,
                   translation="network", **TINY)
    assert "translation" not in free["provenance"]
    assert not np.array_equal(free["image"], out["image"])


def test_a_pre_dcp_generator_applies_to_dcps_recovery_of_the_new_input(hazy, tmp_path):
    from napari_ssl_restore.core import models
    from napari_ssl_restore.nets.gan import ResnetGenerator

    image, _ = hazy
    norm = {"kind": "percentile", "low": 0.1, "high": 99.9}
    kw = {"axes": "ZYX", "mode": "apply", "device": "cpu", "float_output": True}
    outs = {}
    for pre in (False, True):  # an untrained generator: the identity on what it is given
        prov = {"method": "cycle-dehaze", "params": {"translation": "physics", "pre_dcp": pre,
                                                     "haze_patch": 7, "haze_radius": 15}}
        path = models.save_model(models.checkpoint(
            ResnetGenerator(1, 1, features=4, blocks=1, downs=0, norm="none"),
            architecture="resnet-generator", normalization=norm, provenance=prov),
            tmp_path / f"g{pre}.pt")
        outs[pre] = restore(image, "cycle-dehaze", model=str(path), **kw)
    np.testing.assert_allclose(outs[False], image, rtol=1e-4, atol=0.5)  # the input itself
    # DCP's recovery: the veil (the airlight's share) is gone, the contrast stretched
    assert outs[True].mean() < image.mean() - 100
    assert outs[True].std() > 1.2 * image.std()


def test_linear_decay_schedule_reaches_the_critics_too(blurred, monkeypatch):
    import napari_ssl_restore.engine.gan_parts as parts
    from napari_ssl_restore.engine.train import linear_decay

    f = linear_decay(100, 0.5)
    assert [f(1), f(50), f(75), f(100)] == [1.0, 1.0, 0.5, 0.0]
    # a run with the decay: the critics start at the run's rate and end at 0 with the generators
    image, clean = blurred
    seen, update = [], parts.Critic.update

    def spy(self, real, fake):
        seen.append(self.optimizer.param_groups[0]["lr"])
        return update(self, real, fake)

    monkeypatch.setattr(parts.Critic, "update", spy)
    restore(image, "disentangled-deblur", axes="ZYX", clean=clean, steps=4, lr_decay=0.5, **TINY)
    assert seen[0] == 2e-4 and seen[-1] == 0.0
