"""Physics-based GAN: errors, determinism, save/apply, the residual map, the ablation switch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_ssl_restore import restore, restore_physics_gan
from napari_ssl_restore.physics.operators import gaussian_psf

FAST = {"steps": 30, "features": 8, "blocks": 1, "disc_features": 8, "patch_size": 32,
        "batch_size": 2, "check_every": 10, "device": "cpu"}


def _scene(seed=0, size=48):
    rng = np.random.default_rng(seed)
    x = np.zeros((size, size))
    for _ in range(12):
        y0, x0 = rng.integers(4, size - 4, 2)
        x[y0 - 2:y0 + 2, x0 - 2:x0 + 2] = rng.uniform(0.5, 1.0)
    return x


def _blurred(seed=0, size=48, sigma=1.5):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed + 100)
    y = ndi.convolve(_scene(seed, size), gaussian_psf(sigma), mode="reflect")
    return np.clip(y + 0.01 * rng.standard_normal(y.shape), 0, 1).astype(np.float32)


def test_errors_name_the_fix():
    y = _blurred()
    with pytest.raises(ValueError, match="clean="):
        restore(y, "physics-gan", **FAST)
    with pytest.raises(ValueError, match="larger examples or a smaller patch_size"):
        restore(y, "physics-gan", clean=np.zeros((20, 20), np.float32), **FAST)
    with pytest.raises(ValueError, match="psf must be a 2-D"):
        restore(y, "physics-gan", clean=_scene(1), psf=np.ones((3, 3, 3)), **FAST)
    with pytest.raises(ValueError, match="model="):
        restore(y, "physics-gan", mode="apply", device="cpu")
    with pytest.raises(ValueError, match="sr_factor must be 2 or 4"):
        restore(y, "physics-gan", task="sr", sr_factor=3, clean=_scene(1), **FAST)


def test_deterministic_with_seed_and_input_untouched():
    y = _blurred()
    keep = y.copy()
    clean = np.stack([_scene(1), _scene(2)])
    a = restore_physics_gan(y, clean=clean, psf_sigma=1.5, seed=3, **FAST)
    b = restore_physics_gan(y, clean=clean, psf_sigma=1.5, seed=3, **FAST)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(y, keep)
    assert a.shape == y.shape and a.dtype == y.dtype


def test_save_apply_round_trip_residual_and_sr(tmp_path):
    y = _blurred()
    clean = _scene(1, 96)
    path = tmp_path / "g.pt"
    out = restore(y, "physics-gan", task="sr", sr_factor=2, clean=clean, save_model=str(path),
                  full_output=True, **FAST)
    assert out["image"].shape == (96, 96) and out["residual"].shape == (96, 96)
    prov = out["provenance"]
    assert prov["best_step"] > 0 and np.isfinite(prov["physics_residual"])
    again = restore(y, "physics-gan", task="sr", sr_factor=2, mode="apply", model=str(path),
                    device="cpu", full_output=True)
    np.testing.assert_allclose(again["image"], out["image"], atol=1e-6)
    with pytest.raises(ValueError, match="x2"):
        restore(y, "physics-gan", task="deconv", mode="apply", model=str(path), device="cpu")


def test_physics_residual_reported_against_the_inputs_own():
    """The residual map is |H(G(y)) - y| in input units; the provenance compares it with the
    input's own |H(y) - y| and warns when the estimate explains y less well; the ablation switch
    (physics_weight=0) runs."""
    from scipy import ndimage as ndi

    y = _blurred(sigma=2.0)
    clean = np.stack([_scene(k) for k in (1, 2, 3)])
    settings = dict(FAST, steps=60, psf_sigma=2.0, synthetic_weight=0.0)
    out = restore(y, "physics-gan", clean=clean, full_output=True, float_output=True, **settings)
    prov = out["provenance"]
    assert prov["best_step"] > 0 and np.isfinite(prov["input_residual"])
    assert ("warning" in prov) == (prov["physics_residual"] > prov["input_residual"])
    assert prov["checkpoint_by"] == "physics residual" and prov["noise_floor"] > 0
    # the map is |H(G(y)) - y| in the input's units
    hx = ndi.convolve(out["image"], gaussian_psf(2.0), mode="reflect")
    np.testing.assert_allclose(out["residual"][8:-8, 8:-8], np.abs(hx - y)[8:-8, 8:-8],
                               atol=2e-3)
    gan_only = restore(y, "physics-gan", clean=clean, physics_weight=0.0, full_output=True,
                       float_output=True, **dict(settings, steps=10))
    assert np.isfinite(gan_only["image"]).all()


def test_clean_examples_from_a_list_a_glob_a_folder_and_the_cli(tmp_path):
    import tifffile

    from napari_ssl_restore.cli import main

    y = _blurred()
    fast = dict(FAST, steps=5)  # only that every source gives the same examples
    a, b = _scene(1, 60).astype(np.float32), _scene(2, 50).astype(np.float32)
    ref = restore(y, "physics-gan", clean=[a, b], **fast)  # sizes differ: centre-cropped to 50²
    folder = tmp_path / "clean"
    folder.mkdir()
    tifffile.imwrite(folder / "c0.tif", a)
    tifffile.imwrite(folder / "c1.tif", b)
    np.testing.assert_array_equal(restore(y, "physics-gan", clean=str(folder / "c*.tif"), **fast),
                                  ref)
    np.testing.assert_array_equal(restore(y, "physics-gan", clean=str(folder), **fast), ref)
    tifffile.imwrite(tmp_path / "y.tif", y)
    flags = [f"--{k.replace('_', '-')}" if i == 0 else str(v)
             for k, v in fast.items() for i in range(2)]
    assert main(["run", "physics-gan", str(tmp_path / "y.tif"), "--clean", str(folder / "c*.tif"),
                 "-o", str(tmp_path / "out.tif"), "--all-outputs", *flags]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), ref)
    assert tifffile.imread(tmp_path / "out_residual.tif").shape == y.shape
    with pytest.raises(FileNotFoundError, match="no file matches"):
        restore(y, "physics-gan", clean=str(tmp_path / "none*.tif"), **fast)


def test_blurred_cells_sample():
    from napari_ssl_restore.data import blurred_cells

    s = blurred_cells(size=64, examples=2)
    assert s["image"].shape == (64, 64) and s["image"].dtype == np.uint16
    assert s["clean"].shape == (2, 64, 64) and s["truth"].shape == (64, 64)


def test_dehaze_operator_is_dcps_haze_model():
    """task='dehaze': H(x) = x t + A (1 - t) with DCP's airlight and refined transmission of each
    plane; the residual map checks it on the whole plane, with the synthetic and data-adversarial
    terms switched on (they run and stay finite)."""
    from napari_ssl_restore.data import hazy_fields
    from napari_ssl_restore.physics.haze import dark_channel, estimate_airlight, refined_transmission

    d = hazy_fields(n=1, size=64, examples=2)
    y = d["image"][0].astype(np.float32) / 65535
    out = restore(y, "physics-gan", task="dehaze", clean=d["clean"], full_output=True, haze_patch=7,
                  float_output=True, synthetic_weight=1.0, data_adversarial_weight=1.0,
                  **dict(FAST, steps=12))
    x = out["image"]
    assert x.shape == y.shape and np.isfinite(x).all()
    prov = out["provenance"]
    assert prov["checkpoint_by"] == "synthetic pairs" and np.isfinite(prov["synthetic_error"])
    # the network's percentile units are affine, the model is too: compare in those units; the
    # haze is estimated where zero is the physical zero (y / p99.9, as the dcp method reads it)
    lo, hi = np.percentile(y, [0.1, 99.9])
    yn, xn = (y - lo) / (hi - lo), (x - lo) / (hi - lo)
    planar = np.clip(y / hi, 0, 1)[None]
    a = estimate_airlight(planar, dark_channel(planar, 7), 0.001)
    t = refined_transmission(planar, a, patch_size=7, guided_radius=28)
    a_units = (a[0] * hi - lo) / (hi - lo)
    np.testing.assert_allclose(out["residual"] / (hi - lo), np.abs(xn * t + a_units * (1 - t) - yn),
                               atol=2e-3)


def test_qc_pair_chooses_the_checkpoint_and_errors():
    y = _blurred(sigma=2.0)
    clean = np.stack([_scene(k) for k in (1, 2)])
    qc_truth = _scene(7)
    qc_input = _blurred(7, sigma=2.0)
    out = restore(y, "physics-gan", clean=clean, qc_input=qc_input, qc_truth=qc_truth,
                  psf_sigma=2.0, full_output=True, **FAST)
    prov = out["provenance"]
    assert prov["checkpoint_by"] == "QC pair" and 0 <= prov["qc_error"] < 1.5
    assert np.isfinite(prov["physics_residual"])
    with pytest.raises(ValueError, match="both qc_input= .* and qc_truth="):
        restore(y, "physics-gan", clean=clean, qc_input=qc_input, **FAST)
    with pytest.raises(ValueError, match="times 2"):
        restore(y, "physics-gan", clean=_scene(1, 96), task="sr", qc_input=qc_input,
                qc_truth=qc_truth, **FAST)


def test_noise_of_the_degraded_image_alone():
    """The synthetic term's noise: estimated from a blurred image without a clean estimate."""
    from scipy import ndimage as ndi

    from napari_ssl_restore.data import add_noise, cells
    from napari_ssl_restore.physics.noise import noise_of_image

    blurred = ndi.convolve(cells(128, seed=3), gaussian_psf(2.0), mode="reflect")
    pg = noise_of_image(add_noise(blurred, 0.01, poisson=200, seed=1))
    assert pg.gain == pytest.approx(1 / 200, rel=0.2) and pg.offset < 3e-4
    gauss = noise_of_image(add_noise(blurred, 0.05, seed=1))
    assert gauss.gain == 0 and gauss.offset == pytest.approx(0.05 ** 2, rel=0.1)
    # the discrepancy principle's floor: the expected |noise| at each pixel
    clean = torch.from_numpy(blurred.astype(np.float32))[None, None]
    draws = pg.sample(clean.expand(256, 1, -1, -1), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(pg.mean_abs(clean)[0, 0].numpy(), draws.abs().mean(0)[0].numpy(),
                               rtol=0.35, atol=2e-3)
    assert float(pg.mean_abs(clean).mean()) == pytest.approx(float(draws.abs().mean()), rel=0.02)


def test_noise_of_a_sharp_clean_photograph_is_not_its_texture():
    """A hazy 8-bit photograph with no noise added: its noise is little more than its rounding
    (0.29 grey levels). The neighbour residual reads its texture as noise (several grey levels);
    the smooth-block fit takes over."""
    from napari_ssl_restore.data import hazy_scene
    from napari_ssl_restore.physics.noise import noise_of_image

    photo = hazy_scene(beta=1.0)["image"][:256, :256].astype(np.float32)[None]  # grey levels, RGB
    med = float(np.median(photo))

    def sd(model):
        return np.sqrt(model.gain * med + model.offset)

    assert sd(noise_of_image(photo)) < 1.0
    assert sd(noise_of_image(photo, texture_ratio=0.0)) > 3.0  # the neighbour residual alone


def _anisotropic_volume(z=20, size=32, lateral=1.0, axial=3.0, seed=0):
    """Random bright points blurred more along Z than in XY (cubic voxels), with a little noise."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    vol = np.zeros((z, size, size), np.float32)
    pts = rng.integers(2, [z - 2, size - 2, size - 2], size=(40, 3))
    vol[tuple(pts.T)] = 1.0
    vol = ndi.gaussian_filter(vol, (axial, lateral, lateral))
    vol /= vol.max()
    return np.clip(vol + 0.005 * rng.standard_normal(vol.shape), 0, None).astype(np.float32)


def test_lateral_planes_restore_the_axial_slices_of_a_stack(tmp_path):
    """clean='lateral': the stack's XY planes are the clean examples for its XZ/YZ slices; the
    operator is the axial blur the lateral planes lack (Gaussian sqrt(axial² - lateral²) along Z),
    from axial_sigma or a 3-D PSF's widths; errors name the fix."""
    from napari_ssl_restore.physics.operators import psf_widths

    vol = _anisotropic_volume()
    settings = dict(FAST, patch_size=16, steps=12, psf_sigma=1.0, axial_sigma=3.0)
    out = restore(vol, "physics-gan", axes="ZYX", clean="lateral", full_output=True,
                  float_output=True, **settings)
    assert out["image"].shape == vol.shape and out["residual"].shape == vol.shape
    assert np.isfinite(out["image"]).all() and out["provenance"]["planes_done"] == vol.shape[0]
    # a 3-D PSF gives the same widths
    zz, yy, xx = np.mgrid[-9:10, -4:5, -4:5]
    psf3 = np.exp(-0.5 * (zz ** 2 / 9.0 + (yy ** 2 + xx ** 2) / 1.0))
    lateral, axial = psf_widths(psf3)
    assert lateral == pytest.approx(1.0, rel=0.02) and axial == pytest.approx(3.0, rel=0.02)
    with_psf = restore(vol, "physics-gan", axes="ZYX", clean="lateral", psf=psf3,
                       float_output=True, **dict(settings, axial_sigma=0.0))
    np.testing.assert_allclose(with_psf, out["image"], atol=0.05)
    # the CLI: --clean lateral and a 3-D PSF file
    import tifffile

    from napari_ssl_restore.cli import main

    tifffile.imwrite(tmp_path / "vol.tif", vol)
    tifffile.imwrite(tmp_path / "psf.tif", psf3.astype(np.float32))
    flags = [f"--{k.replace('_', '-')}" if i == 0 else str(v)
             for k, v in dict(settings, axial_sigma=0.0).items() for i in range(2)]
    assert main(["run", "physics-gan", str(tmp_path / "vol.tif"), "--axes", "ZYX", "--clean",
                 "lateral", "--psf", str(tmp_path / "psf.tif"), "-o", str(tmp_path / "iso.tif"),
                 "--float", *flags]) == 0
    np.testing.assert_allclose(tifffile.imread(tmp_path / "iso.tif"), with_psf, atol=1e-5)
    with pytest.raises(ValueError, match="Z stack"):
        restore(vol[0], "physics-gan", clean="lateral", **settings)
    with pytest.raises(ValueError, match="lower patch_size to at most 20"):
        restore(vol, "physics-gan", axes="ZYX", clean="lateral", **dict(settings, patch_size=24))
    with pytest.raises(ValueError, match="axial_sigma"):
        restore(vol, "physics-gan", axes="ZYX", clean="lateral", **dict(settings, axial_sigma=0.5))
    with pytest.raises(ValueError, match="task='deconv'"):
        restore(vol, "physics-gan", axes="ZYX", clean="lateral", task="sr",
                **dict(settings, patch_size=16))


def test_denoise_task_identity_operator():
    """task='denoise': H is the identity, so the residual map is |G(y) - y| itself."""
    rng = np.random.default_rng(0)
    y = np.clip(_scene(0) + 0.1 * rng.standard_normal((48, 48)), 0, 1).astype(np.float32)
    out = restore(y, "physics-gan", task="denoise", clean=np.stack([_scene(1), _scene(2)]),
                  full_output=True, float_output=True, **dict(FAST, steps=8))
    np.testing.assert_allclose(out["residual"], np.abs(out["image"] - y), atol=1e-5)


def test_training_pairs_units_and_errors():
    """pairs_input/pairs_truth train G (a 'paired' loss term is reported); the truth, in units of
    its own, is mapped so that its degradation matches the acquisition in the normalised units;
    errors name what is missing or mismatched."""
    from types import SimpleNamespace

    from napari_ssl_restore.methods.physics_gan import Params, _training_pairs, make_operator

    truth = np.stack([_scene(k) for k in (7, 8)])
    acquired = np.stack([_blurred(k, sigma=2.0) for k in (7, 8)])
    params = Params(psf_sigma=2.0, patch_size=32)
    operator, _ = make_operator(params, None, "cpu")
    ctx = SimpleNamespace(offset=0.01, scale=0.5)  # the image's percentile normalisation
    pairs = _training_pairs(acquired, 1000 * truth + 7, params, 1, operator, ctx, "cpu",
                            np.random.default_rng(0), augment=True)
    a, b = pairs.fields
    assert a.shape == b.shape == (2, 1, 48, 48)
    np.testing.assert_allclose(a.numpy(), ((acquired - 0.01) / 0.5)[:, None], atol=1e-6)
    # H(b) now explains a up to the acquisition's noise (0.01 / 0.5 in these units)
    fit = operator(b)[..., 8:-8, 8:-8] - a[..., 8:-8, 8:-8]
    assert float(fit.abs().mean()) < 0.03 and abs(float(fit.mean())) < 0.005

    y = _blurred(sigma=2.0)
    clean = np.stack([_scene(k) for k in (1, 2)])
    steps = []
    restore(y, "physics-gan", clean=clean, pairs_input=acquired, pairs_truth=truth,
            psf_sigma=2.0, progress=steps.append, **FAST)
    assert any("paired" in s.message for s in steps)
    with pytest.raises(ValueError, match="both pairs_input= .* and pairs_truth="):
        restore(y, "physics-gan", clean=clean, pairs_truth=truth, **FAST)
    with pytest.raises(ValueError, match="task 'deconv' or 'denoise'"):
        restore(y, "physics-gan", clean=_scene(1, 96), task="sr", pairs_input=acquired,
                pairs_truth=truth, **FAST)
    with pytest.raises(ValueError, match="same shape"):
        restore(y, "physics-gan", clean=clean, pairs_input=acquired, pairs_truth=truth[:1],
                **FAST)
