"""Double-DIP: losses, each task's outputs, hints, primary outputs and bad input (tiny configs)."""
import numpy as np
import pytest
import torch

from napari_ssl_restore import decompose_double_dip, restore
from napari_ssl_restore.methods import double_dip as dd

TINY = {"channels": 8, "depth": 2, "input_depth": 4, "skip_channels": 2, "device": "cpu"}


@pytest.fixture
def composite():
    """Two textures under a disc-shaped mask (the foreground is known)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    mask = (yy - 12) ** 2 + (xx - 12) ** 2 < 49
    fg = 0.5 + 0.3 * np.sin(xx / 1.5)
    bg = 0.5 + 0.1 * rng.standard_normal((24, 24))
    return np.where(mask, fg, bg).astype(np.float32), mask


def test_exclusion_loss_low_for_disjoint_edges():
    a = torch.zeros(1, 1, 32, 32)
    b = torch.zeros(1, 1, 32, 32)
    a[..., :, 8:] = 1.0  # vertical edge at x=8
    b[..., 20:, :] = 1.0  # horizontal edge at y=20
    c = a.clone()
    assert float(dd.exclusion_loss(a, b)) < 0.05 < float(dd.exclusion_loss(a, c))


def test_binary_regulariser_and_dark_channel():
    assert float(dd.binary_regulariser(torch.full((4, 4), 0.5))) > 100
    assert float(dd.binary_regulariser(torch.tensor([0.0, 1.0]))) == pytest.approx(2, rel=0.01)
    x = torch.ones(1, 3, 9, 9)
    x[0, 1, 4, 4] = 0
    assert float(dd.dark_channel_loss(x, 3)) == pytest.approx(72 / 81)


@pytest.mark.parametrize("task,primary,keys", [
    ("segment", "labels", {"labels", "layer1", "layer2", "mask"}),
    ("separate", "layer1", {"image", "layer1", "layer2", "mask"}),
    ("dehaze", "image", {"image", "mask", "airlight"}),
])
def test_tasks_outputs(task, primary, keys, composite):
    img = (composite[0] * 255).astype(np.uint8)
    out = restore(img, "double-dip", task=task, max_iter=6, full_output=True, seed=1, **TINY)
    assert set(out) - {"provenance"} == keys
    assert out["provenance"]["primary_output"] == primary
    assert out["mask"].shape == img.shape and 0 <= out["mask"].min() <= out["mask"].max() <= 1
    again = restore(img, "double-dip", task=task, max_iter=6, seed=1, **TINY)
    np.testing.assert_array_equal(again, out[primary])
    if task == "segment":
        assert out["labels"].dtype == np.int32 and set(np.unique(out["labels"])) <= {0, 1}
    else:
        assert out[primary].dtype == np.uint8 and out[primary].shape == img.shape


def test_hints_pin_the_mask(composite):
    img, mask = composite
    hints = np.zeros(img.shape, np.uint8)
    hints[10:14, 10:14] = 1  # inside the disc
    hints[:3, :3] = 2
    out = decompose_double_dip(img, task="segment", hints=hints, hint_weight=50.0, max_iter=60,
                               learning_rate=0.01,
                               full_output=True, **TINY)
    assert out["mask"][10:14, 10:14].mean() > out["mask"][:3, :3].mean() + 0.3


def test_rgb_dehaze_and_stack():
    from napari_ssl_restore.data import hazy_scene

    s = hazy_scene()
    img = s["image"][::16, ::16]
    out = restore(img, "double-dip", task="dehaze", max_iter=5, full_output=True, **TINY)
    assert out["image"].shape == img.shape and out["airlight"].shape == (3,)
    stack = np.stack([img[..., 0]] * 2)
    res = restore(stack, "double-dip", axes="ZYX", task="separate", max_iter=8, warm_start=True,
                  full_output=True, **TINY)
    assert res["layer1"].shape == stack.shape and res["provenance"]["stop_iterations"] == [8, 2]
    cold = restore(stack, "double-dip", axes="ZYX", task="separate", max_iter=8,
                   full_output=True, **TINY)  # the default: a fresh fit per plane
    assert cold["provenance"]["stop_iterations"] == [8, 8]
    assert not np.array_equal(cold["layer1"][1], res["layer1"][1])


@pytest.mark.slow
def test_dehaze_transmission_prior_pulls_t_towards_dcp():
    from napari_ssl_restore.data import hazy_scene

    img = hazy_scene()["image"][::16, ::16]
    kw = {"patch_size": 5, "guided_radius": 0, "max_iter": 200, "learning_rate": 0.01, **TINY}
    ref = restore(img, "dcp", patch_size=5, refine=False, full_output=True)
    free = restore(img, "double-dip", task="dehaze", t_prior_weight=0.0, full_output=True, **kw)
    held = restore(img, "double-dip", task="dehaze", t_prior_weight=100.0, full_output=True, **kw)
    # the prior is DCP's t with its haze part rescaled to the learned airlight
    assert abs(ref["airlight"].mean() / held["airlight"].mean() - 1) > 0.01  # A was learned
    prior = dd.rescaled_transmission(ref["transmission"], ref["airlight"].mean(),
                                     held["airlight"].mean())
    err_free, err_held = (np.abs(o["mask"] - prior).mean() for o in (free, held))
    assert err_held < 0.5 * err_free and err_held < 0.12
    fixed = restore(img, "double-dip", task="dehaze", t_prior_weight=100.0, learn_airlight=False,
                    full_output=True, **kw)
    np.testing.assert_allclose(fixed["airlight"], ref["airlight"], atol=0.5)  # kept, 8-bit units
    assert np.abs(fixed["mask"] - ref["transmission"]).mean() < 0.12


def test_rescaled_transmission_is_dcp_with_the_other_airlight():
    from napari_ssl_restore.physics import haze

    rng = np.random.default_rng(0)
    plane = (0.3 + 0.4 * rng.random((1, 32, 32))).astype(np.float32)
    p = {"patch_size": 5, "refine": False}
    t_then = haze.dehaze_plane(plane, **p, airlight=np.array([0.8], np.float32))[1]
    t_now = haze.dehaze_plane(plane, **p, airlight=np.array([0.95], np.float32))[1]
    assert np.abs(t_now - t_then).mean() > 0.05
    np.testing.assert_allclose(dd.rescaled_transmission(t_then, 0.8, 0.95), t_now, atol=1e-5)
    t = torch.from_numpy(t_then)
    np.testing.assert_allclose(dd.rescaled_transmission(t, 0.8, torch.tensor(0.95)).numpy(),
                               t_now, atol=1e-5)


def test_stop_returns_current_estimate(composite):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 1

    out = restore(composite[0], "double-dip", max_iter=500, preview_every=10, es_window=5,
                  should_stop=should_stop, full_output=True, **TINY)
    assert out["provenance"]["stopped"] and out["provenance"]["stop_iterations"][0] < 500


@pytest.mark.parametrize("two", [False, True])
def test_stop_on_a_stack_fills_the_planes_not_reached(two):
    """Stopped in plane 1 of 2: plane 2 of every layer is its input (the second mixture for the
    second layer), its mask empty."""
    a, b = stripes()
    stack = np.stack([a + 0.5 * b, a + 0.4 * b])
    second = np.stack([0.5 * a + b, 0.4 * a + b]) if two else None
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 1

    out = restore(stack, "double-dip", axes="TYX", task="separate", second=second, max_iter=50,
                  preview_every=5, es_window=2, should_stop=should_stop, full_output=True, **TINY)
    assert out["provenance"]["stopped"] and out["provenance"]["planes_done"] == 1
    np.testing.assert_allclose(out["layer1"][1], stack[1], atol=1e-5)
    np.testing.assert_allclose(out["layer2"][1], (second if two else stack)[1], atol=1e-5)
    if two:
        np.testing.assert_allclose(out["unmixed2"][1], second[1], atol=1e-5)
    assert not out["mask"][1].any()


def test_previews_name_the_layers(composite):
    steps = []
    restore(composite[0], "double-dip", task="separate", max_iter=10, preview_every=5,
            progress=steps.append, **TINY)
    previews = [s.preview for s in steps if s.preview is not None]
    assert previews and set(previews[0]) == {"layer1", "layer2", "mask"}


@pytest.mark.parametrize("kw,msg", [
    ({"task": "segment", "hints": np.zeros((3, 3))}, "does not match"),
    ({"task": "segment", "hints": np.full((24, 24), 5)}, "labels 0"),
    ({"task": "matting"}, "one of"),
])
def test_bad_input(kw, msg, composite):
    with pytest.raises(ValueError, match=msg):
        restore(composite[0], "double-dip", max_iter=2, **TINY, **kw)


def stripes():
    """Two layers with disjoint edges: vertical and horizontal stripes (24 x 24)."""
    yy, xx = np.mgrid[:24, :24]
    return ((0.5 + 0.4 * np.sin(xx / 1.3)).astype(np.float32),
            (0.5 + 0.4 * np.sin(yy / 2.1)).astype(np.float32))


def crosstalk(est, own, other):
    """Fit ``est ~ p * own + q * other + r``; the bleed-through of ``other`` is ``|q / p|``."""
    x = np.stack([own.ravel(), other.ravel(), np.ones(own.size)], 1)
    p, q, _ = np.linalg.lstsq(x, est.ravel(), rcond=None)[0]
    return abs(q / p)


def test_two_mixtures_unmix_bleed_through():
    """Two mixtures of the stripes: each layer comes out with less of the other."""
    a, b = stripes()
    m1, m2 = (a + 0.5 * b) / 1.5, (0.5 * a + b) / 1.5
    out = restore(m1, "double-dip", task="separate", second=m2, max_iter=300, seed=0,
                  full_output=True, **TINY)
    assert set(out) - {"provenance"} == {"image", "layer1", "layer2", "mask", "unmixed1",
                                         "unmixed2"}
    for key in ("layer1", "unmixed1"):
        assert out[key].shape == m1.shape and out[key].dtype == np.float32
    assert crosstalk(out["layer1"], a, b) < 0.25  # 0.5 in the first mixture
    assert crosstalk(out["layer2"], b, a) < 0.25
    assert crosstalk(out["unmixed1"], a, b) < 0.25  # the data unmixed with the learned matrix
    assert crosstalk(out["unmixed2"], b, a) < 0.25
    mixing = np.array(out["provenance"]["mixing"])
    assert mixing.shape == (2, 2) and (mixing >= 0).all()
    assert mixing[0, 0] > mixing[0, 1] and mixing[1, 1] > mixing[1, 0]
    assert mixing[0, 1] > 0.3 and mixing[1, 0] > 0.3  # learned: it starts at 0.25
    np.testing.assert_array_equal(m1, (a + 0.5 * b) / 1.5)  # inputs untouched


def test_unmix_inverts_the_mixing():
    """Linear unmixing with the true matrix returns each layer as its mixture holds it."""
    from napari_ssl_restore.methods.double_dip import unmix

    a, b = stripes()
    mixing = np.array([[0.9, 0.4], [0.3, 2.0]])
    m1, m2 = mixing[0, 0] * a + mixing[0, 1] * b, mixing[1, 0] * a + mixing[1, 1] * b
    u1, u2 = unmix(m1, m2, mixing)
    np.testing.assert_allclose(u1, 0.9 * a, atol=1e-5)
    np.testing.assert_allclose(u2, 2.0 * b, atol=1e-5)
    # swapped: y2 dominates the first mixture, so it comes first, as mixture 1 holds it
    u1, u2 = unmix(m1, m2, mixing[:, ::-1], swapped=True)
    np.testing.assert_allclose(u1, 0.9 * a, atol=1e-5)
    np.testing.assert_allclose(u2, 2.0 * b, atol=1e-5)


def test_two_mixtures_of_different_brightness():
    """A second channel four times brighter than the first (it is scaled with the first's range)."""
    a, b = stripes()
    m1, m2 = (a + 0.5 * b) / 1.5, 4 * (0.5 * a + b) / 1.5
    out = restore(m1, "double-dip", task="separate", second=m2, max_iter=300, seed=0,
                  full_output=True, **TINY)
    assert crosstalk(out["layer1"], a, b) < 0.25  # 0.5 in the mixtures
    assert crosstalk(out["layer2"], b, a) < 0.25


@pytest.mark.parametrize("kw,msg", [
    ({"task": "separate", "second": np.zeros((20, 24), np.float32)}, "same shape"),
    ({"task": "segment", "second": np.zeros((24, 24), np.float32)}, "task='separate'"),
])
def test_second_mixture_bad_input(kw, msg, composite):
    with pytest.raises(ValueError, match=msg):
        restore(composite[0], "double-dip", max_iter=2, **TINY, **kw)
