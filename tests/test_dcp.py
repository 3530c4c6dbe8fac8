"""Dark Channel Prior: against a brute-force reference, properties, stacks and bad input."""
import numpy as np
import pytest

from napari_ssl_restore import dehaze_dcp, restore
from napari_ssl_restore.methods import dcp
from napari_ssl_restore.physics import haze


def _box_mean_bruteforce(x, r):
    h, w = x.shape
    out = np.empty_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            out[i, j] = x[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean()
    return out


def _dcp_bruteforce(img, patch, omega, t0, r, eps):
    """He et al. written the slow, obvious way (float64, explicit windows)."""
    img = img.astype(np.float64)
    h, w, _ = img.shape
    k = patch // 2

    def dark(x):
        m = x.min(axis=2)
        return np.array([[m[max(i - k, 0):i + k + 1, max(j - k, 0):j + k + 1].min()
                          for j in range(w)] for i in range(h)])

    d = dark(img)
    n = max(int(d.size * 0.001), 1)
    idx = np.argsort(d.ravel(), kind="stable")[-n:]
    a = img.reshape(-1, 3)[idx].mean(axis=0)
    t = 1 - omega * dark(img / a)
    g = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    mi, mp = _box_mean_bruteforce(g, r), _box_mean_bruteforce(t, r)
    cov = _box_mean_bruteforce(g * t, r) - mi * mp
    var = _box_mean_bruteforce(g * g, r) - mi * mi
    aa = cov / (var + eps)
    bb = mp - aa * mi
    t = np.clip(_box_mean_bruteforce(aa, r) * g + _box_mean_bruteforce(bb, r), 0, 1)
    j = (img - a) / np.maximum(t, t0)[..., None] + a
    return np.clip(j, 0, 1), t, a


def test_matches_bruteforce_reference(rng):
    # smooth random scene (few ties in the dark channel) so the airlight pixels are unambiguous
    from scipy.ndimage import gaussian_filter

    img = np.stack([gaussian_filter(rng.random((30, 34)), 2) for _ in range(3)], -1)
    img = (img - img.min()) / np.ptp(img)
    j_ref, t_ref, a_ref = _dcp_bruteforce(img, 5, 0.95, 0.1, 4, 1e-3)
    out = restore(img.astype(np.float32), "dcp", axes="YXC", patch_size=5, guided_radius=4,
                  guided_eps=1e-3, guided_subsample=1, full_output=True, float_output=True)
    np.testing.assert_allclose(out["airlight"], a_ref * img.max(), rtol=1e-5)
    np.testing.assert_allclose(out["transmission"], t_ref, atol=2e-4)
    np.testing.assert_allclose(out["image"], j_ref, atol=2e-3)


def test_fast_guided_filter_close_to_exact(rng):
    from scipy.ndimage import gaussian_filter

    guide = gaussian_filter(rng.random((120, 130)), 3).astype(np.float32)
    src = (guide + 0.05 * rng.random(guide.shape)).astype(np.float32)
    exact = haze.guided_filter(guide, src, 16, 1e-3)
    fast = haze.fast_guided_filter(guide, src, 16, 1e-3, 4)
    assert np.abs(exact - fast).mean() < 5e-3


def test_min_filter_strips_equal_single_call(rng):
    from scipy import ndimage as ndi

    x = rng.random((700, 420)).astype(np.float32)
    np.testing.assert_array_equal(haze._min_filter(x, 15), ndi.minimum_filter(x, 15, mode="nearest"))


def test_recovers_synthetic_haze(hazy_small):
    from skimage.metrics import peak_signal_noise_ratio as psnr

    out = dehaze_dcp(hazy_small["image"], patch_size=7, guided_radius=15, full_output=True)
    assert psnr(hazy_small["clean"], out["image"]) > psnr(hazy_small["clean"], hazy_small["image"]) + 1
    # the estimated transmission follows the true one
    corr = np.corrcoef(out["transmission"].ravel(), hazy_small["transmission"].ravel())[0, 1]
    assert corr > 0.5


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("axes,shape", [("YX", (24, 28)), ("YXC", (24, 28, 3)), ("TYX", (3, 24, 28)),
                                        ("TZYX", (2, 2, 20, 22)), ("TYXC", (2, 20, 22, 3)),
                                        ("XY", (28, 24))])
def test_shape_dtype_no_inplace_deterministic(dtype, axes, shape, rng):
    if np.dtype(dtype).kind == "f":
        data = rng.random(shape).astype(dtype)
    else:
        data = rng.integers(0, np.iinfo(dtype).max, shape).astype(dtype)
    before = data.copy()
    a = restore(data, "dcp", axes=axes, patch_size=3, guided_radius=4)
    b = restore(data, "dcp", axes=axes, patch_size=3, guided_radius=4)
    assert a.shape == data.shape and a.dtype == data.dtype
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(data, before)
    full = restore(data, "dcp", axes=axes, patch_size=3, guided_radius=4, full_output=True)
    assert full["transmission"].shape == tuple(s for s, ax in zip(shape, axes, strict=True)
                                               if ax != "C")
    assert full["transmission"].dtype == np.float32
    assert 0 <= full["transmission"].min() and full["transmission"].max() <= 1


def test_stack_planes_match_single_plane_with_per_plane_airlight(rng):
    stack = rng.random((3, 20, 24)).astype(np.float32)
    out = restore(stack, "dcp", axes="ZYX", shared_airlight=False, patch_size=3, guided_radius=3,
                  full_output=True)
    assert out["airlight"].shape == (3,)
    for i in range(3):
        np.testing.assert_allclose(
            out["image"][i],
            restore(stack[i] , "dcp", axes="YX", patch_size=3, guided_radius=3) * 1.0,
            # per-plane results differ only through the shared normalisation by the stack maximum
            rtol=0, atol=float(stack.max()) * 1e-5 + 1e-5) if stack[i].max() == stack.max() else None


def test_shared_airlight_is_one_value_for_the_time_lapse():
    from napari_ssl_restore.data import fluorescence_timelapse

    s = fluorescence_timelapse(n_frames=4, size=64)
    shared = restore(s["image"], "dcp", axes="TYX", full_output=True)
    per = restore(s["image"], "dcp", axes="TYX", shared_airlight=False, full_output=True)
    assert np.ndim(shared["airlight"]) == 0
    assert per["airlight"].shape == (4,)
    # a single airlight keeps the frame-to-frame mean steadier than per-frame estimates
    f = lambda x: np.std(x.reshape(4, -1).mean(1))  # noqa: E731
    assert f(shared["image"].astype(float)) <= f(per["image"].astype(float)) + 1e-6


def test_single_channel_runs_and_lifts_the_veil():
    from napari_ssl_restore.data import fluorescence_timelapse

    s = fluorescence_timelapse(n_frames=2, size=96)
    out = restore(s["image"], "dcp", axes="TYX", float_output=True, full_output=True)
    # background under the veil (low transmission) is pulled down
    veil = s["transmission"] < 0.5
    assert out["image"][:, veil].mean() < s["image"][:, veil].mean()


def test_brightest_estimator_and_no_refine(hazy_small):
    a = restore(hazy_small["image"], "dcp", airlight_estimator="brightest", refine=False,
                full_output=True)
    b = restore(hazy_small["image"], "dcp", full_output=True)
    assert a["airlight"].shape == b["airlight"].shape == (3,)
    assert not np.array_equal(a["transmission"], b["transmission"])


@pytest.mark.parametrize("kwargs,msg", [
    ({"patch_size": 0}, "patch_size"), ({"omega": 1.5}, "omega"), ({"t0": 0}, "t0"),
    ({"airlight_estimator": "max"}, "one of"), ({"guided_eps": -1.0}, "guided_eps"),
    ({"bogus": 1}, "unknown parameter"), ({"patch_size": 2.5}, "whole number"),
])
def test_bad_parameters_raise(kwargs, msg, rng):
    with pytest.raises((ValueError, TypeError), match=msg):
        restore(rng.random((16, 16)), "dcp", **kwargs)


def test_public_function_signature_comes_from_params():
    import inspect

    sig = inspect.signature(dehaze_dcp)
    for info in dcp.SPEC.param_info:
        assert sig.parameters[info.name].default == info.default
        assert info.doc and info.name in dehaze_dcp.__doc__
    assert "References" in dehaze_dcp.__doc__
