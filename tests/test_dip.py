"""Deep Image Prior: operators, early stopping, tasks, stacks, stop and bad input (tiny configs)."""
import numpy as np
import pytest
import torch

from napari_ssl_restore import restore, restore_dip
from napari_ssl_restore.core.progress import Cancelled
from napari_ssl_restore.engine.prior import EarlyStop
from napari_ssl_restore.nets.skip import SkipNet, count_parameters
from napari_ssl_restore.physics import operators as ops

TINY = {"channels": 8, "depth": 2, "input_depth": 4, "skip_channels": 2, "device": "cpu"}


@pytest.fixture
def noisy():
    from napari_ssl_restore.data import noisy_cells

    return noisy_cells(size=32, sigma=0.1)


def test_skipnet_paper_size_and_any_shape():
    assert 2.0e6 < count_parameters(SkipNet(32, 3)) < 2.5e6
    net = SkipNet(4, 2, channels=8, depth=3)
    assert net(torch.rand(1, 4, 37, 53)).shape == (1, 2, 37, 53)


def test_lanczos_downsample_and_blur_preserve_constants():
    for f in (2, 3, 4, 8):
        k = ops.lanczos_kernel(f)
        assert k.size == 6 * f and k.sum() == pytest.approx(1.0, abs=1e-6)
        x = torch.full((1, 2, 8 * f, 5 * f), 0.7)
        y = ops.downsample(x, f)
        assert y.shape == (1, 2, 8, 5)
        torch.testing.assert_close(y, torch.full_like(y, 0.7))
    psf = ops.gaussian_psf(1.5)
    assert psf.sum() == pytest.approx(1.0) and psf.shape == (11, 11)
    x = torch.full((1, 1, 20, 20), 0.3)
    torch.testing.assert_close(ops.blur(x, torch.from_numpy(psf)), x)


def test_blur_is_true_convolution():
    """An asymmetric PSF shifts an impulse the way scipy's convolution does."""
    from scipy.ndimage import convolve

    psf = np.zeros((3, 3), np.float32)
    psf[0, 2] = 1
    img = np.zeros((9, 9), np.float32)
    img[4, 4] = 1
    ours = ops.blur(torch.from_numpy(img)[None, None], torch.from_numpy(psf))[0, 0].numpy()
    np.testing.assert_allclose(ours, convolve(img, psf, mode="reflect"))


def test_check_psf():
    assert ops.check_psf(np.ones((2, 4))).shape == (3, 5)
    with pytest.raises(ValueError, match="2-D"):
        ops.check_psf(np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="non-negative"):
        ops.check_psf(-np.ones((3, 3)))


def test_variance_early_stop_finds_each_planes_minimum_and_freezes_it():
    """Two planes fitted together: each has its own minimum, freeze and estimate."""
    es = EarlyStop(window=5, patience=20)
    g = torch.Generator().manual_seed(0)
    for it in range(1, 200):
        # noise amplitude falls until iteration 60 (plane 0) / 120 (plane 1), then grows
        amp = torch.tensor([[abs(it - 60) / 60 + 0.05], [abs(it - 120) / 60 + 0.05]])
        x = amp * torch.randn(2, 16, generator=g)
        es.update(it, x, {"it": torch.full((2, 1), float(it))})
        if it == 100:
            assert not es.finished()  # plane 1 still looks for its minimum
    best = es.best_iter.tolist()
    assert 45 <= best[0] <= 75 and 105 <= best[1] <= 135
    assert es.finished() and es.stop_iter.tolist() == [b + 21 for b in best]
    assert es.best["it"][:, 0].tolist() == best  # frozen there, though the updates went on


@pytest.mark.parametrize("task,kw,shape", [
    ("denoise", {}, (32, 32)),
    ("inpaint", {"mask": "random"}, (32, 32)),
    ("sr", {"sr_factor": 2}, (64, 64)),
    ("deconv", {"psf_sigma": 1.0}, (32, 32)),
    ("deconv", {"psf": np.ones((3, 3))}, (32, 32)),
])
def test_tasks_shape_dtype_determinism(task, kw, shape, noisy):
    img = (np.clip(noisy["image"], 0, 1) * 65535).astype(np.uint16)
    if kw.get("mask") == "random":
        kw = {"mask": np.random.default_rng(0).random(img.shape) < 0.3}
    before = img.copy()
    a = restore(img, "dip", task=task, max_iter=12, seed=1, **TINY, **kw)
    b = restore(img, "dip", task=task, max_iter=12, seed=1, **TINY, **kw)
    c = restore(img, "dip", task=task, max_iter=12, seed=2, **TINY, **kw)
    assert a.shape == shape and a.dtype == np.uint16
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(img, before)
    if task == "inpaint":
        known = ~kw["mask"]
        np.testing.assert_array_equal(a[known], img[known])


def test_denoising_fit_reduces_error(noisy):
    out = restore_dip(noisy["image"], max_iter=200, early_stop=False, output_averaging=0.9, **TINY)
    err_in = np.mean((noisy["image"] - noisy["clean"]) ** 2)
    assert np.mean((out - noisy["clean"]) ** 2) < err_in


def test_rgb_and_stack_warm_fresh_and_batched(noisy):
    rgb = np.stack([noisy["image"]] * 3, -1)
    assert restore(rgb, "dip", max_iter=5, **TINY).shape == rgb.shape
    stack = np.stack([noisy["image"]] * 3)
    kw = dict(axes="ZYX", max_iter=20, early_stop=False, full_output=True, float_output=True, **TINY)
    warm = restore(stack, "dip", warm_start=True, warm_iter_fraction=0.25, **kw)
    assert warm["image"].shape == stack.shape
    assert warm["provenance"]["stop_iterations"] == [20, 5, 5]
    assert warm["provenance"]["planes_done"] == 3 and not warm["provenance"]["stopped"]
    cold = restore(stack, "dip", **kw)  # the default: a fresh fit per plane, one at a time on a CPU
    assert cold["provenance"]["stop_iterations"] == [20, 20, 20]
    assert cold["provenance"]["plane_batch"] == 1
    assert not np.array_equal(cold["image"][1], warm["image"][1])  # plane 2 was fitted anew
    # the three planes fitted together as three networks in one batched step: each plane as alone
    batched = restore(stack, "dip", plane_batch=3, **kw)
    assert batched["provenance"]["plane_batch"] == 3
    assert batched["provenance"]["stop_iterations"] == [20, 20, 20]
    # (equal up to float rounding, which Adam's first steps amplify a little)
    assert np.abs(batched["image"] - cold["image"]).mean(axis=(1, 2)).max() < 5e-3
    other = restore(stack[2], "dip", axes="YX", seed=2, float_output=True, max_iter=20,
                    early_stop=False, **TINY)
    assert np.abs(other - cold["image"][2]).mean() > 3e-2  # another code and seed: far apart


def test_early_stopping_reports_iterations(noisy):
    out = restore(noisy["image"], "dip", max_iter=400, es_window=10, es_patience=30,
                  full_output=True, **TINY)
    prov = out["provenance"]
    stop, best = prov["stop_iterations"][0], prov["best_iterations"][0]
    assert best <= stop <= 400
    if stop < 400:
        assert stop == best + 31


@pytest.mark.parametrize("batch,done", [(1, 1), (2, 2)])
def test_stop_returns_best_so_far_and_marks_unrestored_planes(noisy, batch, done):
    stack = np.stack([noisy["image"]] * 3)
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    out = restore(stack, "dip", axes="ZYX", max_iter=200, early_stop=False, preview_every=10,
                  es_window=5, should_stop=should_stop, full_output=True, plane_batch=batch,
                  float_output=True, **TINY)
    prov = out["provenance"]
    assert prov["stopped"] and prov["planes_done"] == done  # a batch stops together
    assert len(prov["stop_iterations"]) == done and prov["stop_iterations"][0] < 200
    assert out["image"].shape == stack.shape
    assert not np.array_equal(out["image"][done - 1], stack[done - 1])  # fitted
    np.testing.assert_allclose(out["image"][done:], stack[done:], atol=1e-6)  # left as they were


def test_batch_too_large_for_the_device_halves_and_retries(noisy, monkeypatch, caplog):
    from napari_ssl_restore.nets.stack import StackedNets

    forward = StackedNets.forward

    def scarce(self, x):
        if self.count > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(self, x)

    monkeypatch.setattr(StackedNets, "forward", scarce)
    stack = np.stack([noisy["image"]] * 3)
    kw = dict(axes="ZYX", max_iter=10, early_stop=False, full_output=True, float_output=True, **TINY)
    out = restore(stack, "dip", plane_batch=3, **kw)
    assert out["provenance"]["plane_batch"] == 1 and "retrying with 1" in caplog.text
    assert out["provenance"]["stop_iterations"] == [10, 10, 10]
    with pytest.raises(ValueError, match="shape"):  # other errors are not retried
        monkeypatch.setattr(StackedNets, "forward", lambda self, x: (_ for _ in ()).throw(
            ValueError("wrong shape")))
        restore(stack, "dip", plane_batch=2, **kw)


def test_progress_has_previews(noisy):
    steps = []
    restore(noisy["image"], "dip", max_iter=20, preview_every=10, early_stop=False,
            progress=steps.append, **TINY)
    previews = [s for s in steps if s.preview is not None]
    assert len(previews) == 2 and previews[0].preview.shape == (32, 32, 1)
    assert all("loss" in s.metrics for s in steps)


@pytest.mark.parametrize("kw,msg", [
    ({"task": "inpaint"}, "needs a mask"),
    ({"task": "inpaint", "mask": np.ones((32, 32))}, "every pixel"),
    ({"task": "inpaint", "mask": np.zeros((5, 5))}, "does not match"),
    ({"task": "deconv", "psf": np.ones((2, 2, 2))}, "2-D"),
    ({"task": "blur"}, "one of"),
    ({"sr_factor": 5}, "one of"),
    ({"learning_rate": 0.0}, "learning_rate"),
])
def test_bad_input(kw, msg, noisy):
    with pytest.raises(ValueError, match=msg):
        restore(noisy["image"], "dip", max_iter=2, **TINY, **kw)


@pytest.mark.parametrize("early_stop", [True, False])
def test_stop_before_a_usable_estimate_keeps_nothing_and_says_why(noisy, early_stop):
    # a Stop at the first iteration: early stopping has no best yet (or, without it, fewer than a
    # window of iterations ran); a grey blob is not a result
    with pytest.raises(Cancelled, match="at iteration 1, before a usable estimate"):
        restore(noisy["image"], "dip", max_iter=50, early_stop=early_stop,
                should_stop=lambda: True, **TINY)


def test_stop_in_a_later_plane_before_its_estimate_keeps_the_planes_done(noisy):
    stack = np.stack([noisy["image"]] * 2)
    steps = []

    def should_stop():  # the first report of plane 2
        return any(s.message.startswith("plane 2/2") for s in steps)

    out = restore(stack, "dip", axes="ZYX", max_iter=8, es_window=4, progress=steps.append,
                  should_stop=should_stop, full_output=True, **TINY)
    prov = out["provenance"]
    assert prov["stopped"] and prov["planes_done"] == 1 and len(prov["stop_iterations"]) == 1
    np.testing.assert_allclose(out["image"][1], stack[1], atol=1e-6)  # the input (float32 round trip)


def test_deconvolution_can_rise_above_the_blurred_data():
    """A deconvolved peak is brighter than its blurred image: the estimate's range allows it (a
    plain sigmoid over the data's percentile range could not exceed the data's maximum)."""
    from scipy import ndimage as ndi

    img = np.zeros((32, 32), np.float32)
    img[10, 10] = img[20, 22] = 1.0
    img[5:8, 25:28] = 0.3
    y = ndi.convolve(img, ops.gaussian_psf(1.5), mode="reflect")
    out = restore_dip(y, task="deconv", psf_sigma=1.5, max_iter=300, early_stop=False,
                      float_output=True, seed=0, **TINY)
    assert out.max() > 1.2 * y.max()


def test_settle_freezes_rows_with_their_estimate_then():
    """A plane ended by another rule (the discrepancy principle) keeps its estimate of that
    moment; the other plane goes on."""
    es = EarlyStop(window=2, patience=1 << 62)
    for it in range(1, 10):
        est = {"it": torch.full((2, 1), float(it))}
        es.update(it, torch.randn(2, 4), est)
        if it == 5:
            es.settle(it, torch.tensor([True, False]), est)
    assert es.frozen.tolist() == [True, False] and es.best["it"][0, 0] == 5
    assert es.stop_iter.tolist()[0] == 5 and not es.finished()


def test_preconditioner_evens_out_what_the_psf_attenuates():
    from napari_ssl_restore.methods import dip

    params = dip.Params(task="deconv", psf_sigma=2.0, precondition=0.03)
    pre = dip._preconditioner(params, None, (32, 32), torch.device("cpu"))
    flat = torch.full((1, 1, 32, 32), 0.7)
    torch.testing.assert_close(pre(flat), flat)  # zero frequency untouched
    stripes = torch.tensor([(-1.0) ** k for k in range(32)]).expand(1, 1, 32, 32)
    gain = float(pre(stripes).std() / stripes.std())
    assert gain > 5  # the finest detail, nearly erased by the blur, is weighted up
    assert dip._preconditioner(dip.Params(task="deconv", precondition=0), None, (32, 32),
                               torch.device("cpu")) is None


def test_deconvolution_stops_by_the_discrepancy_principle():
    """The fit ends once H(x̂) explains the data to within its measured noise, not at max_iter."""
    from scipy import ndimage as ndi

    from napari_ssl_restore.data import cells

    rng = np.random.default_rng(0)
    y = ndi.gaussian_filter(cells(48, seed=1), 1.5) + 0.03 * rng.standard_normal((48, 48))
    out = restore_dip(y.astype(np.float32), task="deconv", psf_sigma=1.5, max_iter=1500,
                      es_window=20, full_output=True, seed=0, **TINY)
    prov = out["provenance"]
    assert prov["stop_iterations"][0] < 1500
    noise_var = (0.03 / (np.percentile(y, 99.9) - np.percentile(y, 0.1))) ** 2
    assert prov["data_residual"][0] <= 1.3 * noise_var
