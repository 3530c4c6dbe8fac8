"""The classical baselines: Richardson–Lucy (discrepancy stop) and calibrated classical denoising."""
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_ssl_restore import deconvolve_richardson_lucy, denoise_classic, restore
from napari_ssl_restore.data import add_noise, cells
from napari_ssl_restore.physics.operators import gaussian_psf


def psnr(x, ref):
    return float(10 * np.log10(1.0 / np.mean((np.asarray(x, np.float64) - ref) ** 2)))


@pytest.fixture(scope="module")
def field():
    return cells(96, seed=3).astype(np.float64)


def blurred(truth, sigma=1.5, mode="reflect"):
    return ndi.convolve(truth, gaussian_psf(sigma).astype(np.float64), mode=mode)


# --- Richardson-Lucy ---------------------------------------------------------------------------

def test_rl_improves_psnr_and_stops_earlier_at_higher_noise(field):
    runs = {}
    for noise in (0.005, 0.04):
        noisy = np.clip(add_noise(blurred(field), noise, seed=1), 0, None)
        out = restore(noisy, "richardson-lucy", axes="YX", psf_sigma=1.5, full_output=True)
        runs[noise] = out["provenance"]
        assert out["image"].dtype == np.float32 and out["image"].shape == noisy.shape
        assert psnr(out["image"], field) > psnr(noisy, field) + 1.0
        assert out["provenance"]["discrepancy_reached"] is True
    assert runs[0.04]["iterations"] < runs[0.005]["iterations"]
    assert runs[0.04]["noise_variance"] > runs[0.005]["noise_variance"]


def test_rl_given_psf_equals_gaussian_and_3d_psf_uses_its_in_focus_plane(field):
    noisy = np.clip(add_noise(blurred(field), 0.01, seed=2), 0, None).astype(np.float32)
    kw = {"axes": "YX", "stop": "fixed", "max_iter": 8}
    by_sigma = deconvolve_richardson_lucy(noisy, psf_sigma=1.5, **kw)
    given = gaussian_psf(1.5)
    np.testing.assert_allclose(deconvolve_richardson_lucy(noisy, psf=given, **kw), by_sigma,
                               atol=1e-5)
    wide = gaussian_psf(4.0)
    sharp = np.pad(given, (wide.shape[0] - given.shape[0]) // 2)
    stack = np.stack([wide, sharp, wide])
    out = restore(noisy, "richardson-lucy", psf=stack, full_output=True, **kw)
    assert out["provenance"]["psf_plane"] == 1
    np.testing.assert_allclose(out["image"], deconvolve_richardson_lucy(noisy, psf=sharp, **kw),
                               atol=1e-6)


def _circular_rl(y, psf, iterations):
    """Richardson-Lucy with the FFT's wrap-around at the edges: what reflect padding avoids."""
    h, w = y.shape
    k = np.zeros((h, w))
    r = psf.shape[0] // 2
    k[:psf.shape[0], :psf.shape[1]] = psf
    otf = np.fft.rfft2(np.roll(k, (-r, -r), axis=(0, 1)))

    def conv(x, f):
        return np.fft.irfft2(np.fft.rfft2(x) * f, s=(h, w))

    x = np.full_like(y, y.mean())
    for _ in range(iterations):
        x = x * conv(y / np.maximum(conv(x, otf), 1e-7), np.conj(otf))
    return x


def test_rl_reflect_padding_avoids_edge_ringing(field):
    ramp = np.linspace(0.1, 0.9, field.shape[1])[None, :] * np.ones_like(field)  # not periodic
    truth = 0.5 * field + 0.5 * ramp
    y = blurred(truth, 2.0)
    ours = deconvolve_richardson_lucy(y, psf_sigma=2.0, stop="fixed", max_iter=20)
    wrapped = _circular_rl(y, gaussian_psf(2.0).astype(np.float64), 20)
    edge = np.zeros(truth.shape, bool)
    edge[:4], edge[-4:], edge[:, :4], edge[:, -4:] = True, True, True, True

    def rmse(x, where):
        return float(np.sqrt(np.mean((x[where] - truth[where]) ** 2)))

    assert rmse(ours, edge) < 2.0 * rmse(ours, ~edge)  # the border as good as the inside, nearly
    assert rmse(ours, edge) < 0.25 * rmse(wrapped, edge)


@pytest.mark.parametrize("psf, match", [
    (-gaussian_psf(1.0), "non-negative"),
    (np.zeros((5, 5)), "non-negative"),
    (np.ones((2, 3, 3, 3)), "2-D"),
    (np.ones((301, 301)), "larger than the image"),
])
def test_rl_bad_psf_is_a_clear_error(psf, match):
    with pytest.raises(ValueError, match=match):
        deconvolve_richardson_lucy(np.ones((32, 32), np.float32), psf=psf)


def test_rl_rgb_stack_and_input_untouched(field):
    rgb = np.stack([blurred(field), 0.5 * blurred(field), blurred(field[::-1])], axis=-1)
    rgb = (np.clip(add_noise(rgb, 0.01, seed=4), 0, 1) * 255).astype(np.uint8)
    stack = np.stack([rgb, rgb[::-1]])
    before = stack.copy()
    out = restore(stack, "richardson-lucy", axes="ZYXC", psf_sigma=1.5, max_iter=20,
                  full_output=True)
    np.testing.assert_array_equal(stack, before)
    assert out["image"].shape == stack.shape and out["image"].dtype == np.uint8
    its = out["provenance"]["iterations"]
    assert set(its) == {"min", "median", "max"} and 1 <= its["min"] <= its["max"] <= 20


# --- classic-denoise -----------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["wavelet", "tv", "nl-means"])
def test_calibration_picks_a_strength_near_the_grids_best(field, algorithm):
    noisy = add_noise(field, 0.08, seed=5)
    out = restore(noisy, "classic-denoise", axes="YX", algorithm=algorithm, passes=2,
                  full_output=True)
    cal = out["provenance"]["calibration"]
    assert out["provenance"]["strength"] in cal["strengths"] and len(cal["losses"]) == 5
    scores = {s: psnr(denoise_classic(noisy, algorithm=algorithm, calibrate=False, strength=s),
                      field) for s in cal["strengths"]}
    chosen = psnr(out["image"], field)
    assert chosen == pytest.approx(scores[out["provenance"]["strength"]], abs=1e-4)
    assert chosen >= max(scores.values()) - 0.5
    assert chosen > psnr(noisy, field) + 3


@pytest.mark.parametrize("algorithm", ["nl-means", "wavelet", "tv"])
@pytest.mark.parametrize("rgb", [False, True], ids=["grey", "rgb"])
def test_every_algorithm_on_grey_and_rgb(field, algorithm, rgb):
    clean = np.stack([field, field[::-1], field[:, ::-1]], axis=-1)[:64, :64] if rgb \
        else field[:64, :64]
    image = (np.clip(add_noise(clean, 0.08, seed=6), 0, 1) * 255).astype(np.uint8)
    before = image.copy()
    out = denoise_classic(image, algorithm=algorithm, calibrate=False, full_output=True)
    np.testing.assert_array_equal(image, before)
    assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
    assert psnr(out["image"] / 255, clean) > psnr(image / 255, clean)
    assert out["provenance"]["noise_sigma"] == pytest.approx(0.08 * 255, rel=0.3)


def test_missing_bm3d_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bm3d", None)  # import bm3d now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "napari-ssl-restore\[bm3d\]"'):
        denoise_classic(np.ones((32, 32), np.float32), algorithm="bm3d")
    with pytest.raises(ValueError, match="non-commercial"):
        denoise_classic(np.ones((32, 32), np.float32), algorithm="bm3d")


def test_noise_sigma_override_skips_the_estimate(field):
    noisy = add_noise(field, 0.05, seed=7)
    out = restore(noisy, "classic-denoise", axes="YX", algorithm="tv", calibrate=False,
                  noise_sigma=0.05, full_output=True)
    assert out["provenance"]["noise_sigma"] == pytest.approx(0.05, rel=1e-4)
    assert "calibration" not in out["provenance"]


def test_stop_keeps_what_is_done(field):
    y = np.stack([blurred(field)] * 3).astype(np.float32)
    out = restore(y, "richardson-lucy", axes="ZYX", stop="fixed", max_iter=50,
                  should_stop=lambda: True, full_output=True)
    info = out["provenance"]
    assert info["stopped"] is True and info["planes_done"] == 1 and info["iterations"] == 1
    assert not np.array_equal(out["image"][0], y[0])  # the first plane's estimate so far
    np.testing.assert_allclose(out["image"][1:], y[1:], rtol=1e-6)  # the rest as they were
    calls = iter(range(100))
    out = restore(y, "classic-denoise", axes="ZYX", algorithm="tv", calibrate=False,
                  noise_sigma=0.01, should_stop=lambda: next(calls) >= 1, full_output=True)
    assert out["provenance"]["stopped"] is True
    np.testing.assert_allclose(out["image"][2], y[2], rtol=1e-6)


def test_richardson_lucy_reports_its_data_residual_to_the_quality_block():
    from scipy import ndimage as ndi

    from napari_ssl_restore import data, restore

    rng = np.random.default_rng(31)
    field = ndi.gaussian_filter(data.microscopy_field(128, seed=31), 2.0)
    noisy = (field + 0.01 * rng.standard_normal(field.shape)).astype(np.float32)
    res = restore(noisy, "richardson-lucy", axes="YX", psf_sigma=2.0, full_output=True)
    prov = res["provenance"]
    assert len(prov["data_residual"]) == 1
    # stopped by the discrepancy principle: the residual sits at the noise floor
    assert prov["quality"]["physics_residual"] == pytest.approx(1.0, abs=0.3)
