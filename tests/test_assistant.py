"""The restore assistant (``analyse``): estimators recover known degradations, recommendations
follow the data, bad input is refused with one sentence, and the CLI wraps it."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from scipy import ndimage as ndi
from skimage import data as skdata
from skimage import transform

from napari_ssl_restore import analyse, data
from napari_ssl_restore import cli as _cli
from napari_ssl_restore.engine.request import check_request
from napari_ssl_restore.physics import estimate as est


@pytest.fixture(scope="module")
def smooth_field():
    """scikit-image's camera, downscaled to 256² and smoothed: a field smoother than its noise."""
    cam = transform.resize(skdata.camera().astype(np.float64) / 255, (256, 256), anti_aliasing=True)
    return ndi.gaussian_filter(cam, 1.0)


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_gaussian_sigma_recovered(smooth_field, sigma):
    rng = np.random.default_rng(1)
    noisy = smooth_field + sigma * rng.standard_normal(smooth_field.shape)
    noise = analyse(noisy, measure=False)["noise"]
    assert noise["model"] == "gaussian"
    assert abs(noise["sigma"] / sigma - 1) < 0.15
    assert not noise["correlated"]


@pytest.mark.parametrize("gain", [0.01, 0.003])
def test_poisson_gaussian_gain_recovered(smooth_field, gain):
    rng = np.random.default_rng(2)
    noisy = rng.poisson(smooth_field / gain) * gain + 0.01 * rng.standard_normal(smooth_field.shape)
    noise = analyse(noisy, measure=False)["noise"]
    assert noise["model"] == "poisson-gaussian"
    assert abs(noise["a"] / gain - 1) < 0.25


def test_correlated_noise_flagged(smooth_field):
    rng = np.random.default_rng(3)
    n = ndi.gaussian_filter(rng.standard_normal(smooth_field.shape), 1.0)
    noise = analyse(smooth_field + 0.05 * n / n.std(), measure=False)["noise"]
    assert noise["correlated"]


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_blur_sigma_recovered(sigma):
    rng = np.random.default_rng(4)
    sharp = skdata.camera().astype(np.float64) / 255
    blurred = ndi.gaussian_filter(sharp, sigma) + 0.01 * rng.standard_normal(sharp.shape)
    got = analyse(blurred, measure=False)["blur_sigma"]
    assert got is not None and abs(got / sigma - 1) < 0.3


def test_sharp_image_not_blurred_and_psf_width_used():
    rng = np.random.default_rng(5)
    sharp = skdata.camera().astype(np.float64) / 255 + 0.01 * rng.standard_normal((512, 512))
    assert analyse(sharp, measure=False)["blur_sigma"] is None
    yy, xx = np.mgrid[-10:11, -10:11]
    psf = np.exp(-(yy ** 2 + xx ** 2) / (2 * 2.0 ** 2))
    assert analyse(sharp, psf=psf, measure=False)["blur_sigma"] == pytest.approx(2.0, rel=0.05)


def test_haze_scored_above_a_clear_image():
    hazy = analyse(data.hazy_scene()["image"], "YXC", measure=False)
    clear = analyse(skdata.astronaut(), "YXC", measure=False)
    assert hazy["haze"]["score"] > clear["haze"]["score"] + 0.2
    assert hazy["recommendations"][0]["method"] == "dcp"


def _valid(rec):
    check_request(rec["method"], dict(rec["params"]), seed=0, device="cpu")


def test_noisy_timelapse_recommends_video_first():
    video = data.noisy_video(n_frames=6, size=96)
    result = analyse(video["image"], "TYX", measure=False)
    assert result["time"]["motion_px"] < 5 and 0 < result["time"]["similarity"] <= 1
    first = result["recommendations"][0]
    assert first["method"] == "frame2frame" or (first["method"] == "dncnn"
                                                and first["params"].get("fusion_radius") == 2)
    for rec in result["recommendations"]:
        _valid(rec)


def test_pair_recommends_noise2noise_first():
    pair = data.noisy_pair(size=128)
    result = analyse(pair["image"], second=pair["target"], measure=False)
    assert result["second"]["registered"] and result["second"]["independent_noise"]
    first = result["recommendations"][0]
    assert first["method"] == "noise2noise" and "target" not in first["params"]
    assert "target=" in first["why"]
    same = analyse(pair["image"], second=pair["image"], measure=False)["second"]
    assert not same["independent_noise"]


def test_json_round_trip_and_clean_image_gets_nothing(smooth_field):
    d = analyse(skdata.astronaut(), "YXC", measure=False)  # a sharp, clean colour photograph
    assert json.loads(json.dumps(d)) == d
    assert d["recommendations"] == [] and isinstance(d["summary"], str)
    blurred = analyse(smooth_field, "YX", measure=False)  # downscaled, smoothed: blurred only
    assert json.loads(json.dumps(blurred)) == blurred
    assert [r["method"] for r in blurred["recommendations"][:2]] == ["richardson-lucy", "dip"]
    _valid(blurred["recommendations"][0])
    noisy = analyse(smooth_field + 0.05 * np.random.default_rng(6).standard_normal((256, 256)))
    assert {r["method"] for r in noisy["recommendations"][:2]} == {"dncnn", "classic-denoise"}
    assert all(r["expected_seconds"] >= 0 for r in noisy["recommendations"])
    _valid(noisy["recommendations"][0])


@pytest.mark.parametrize("bad, word", [
    (np.arange(100.0), "1-D"),
    (np.full((64, 64), 3.0), "constant"),
    (np.full((64, 64), np.nan), "NaN"),
    (np.zeros((0, 64)), "empty"),
    (np.ones((1, 1)), "pixels"),
])
def test_bad_input_is_one_clear_sentence(bad, word):
    with pytest.raises(ValueError, match=word):
        analyse(bad, measure=False)


def test_estimator_refuses_tiny_planes():
    with pytest.raises(ValueError, match="too small"):
        est.noise_fit([np.zeros((4, 4))])


def test_cli_json_and_constant_image(tmp_path, capsys):
    path = tmp_path / "noisy.tif"
    tifffile.imwrite(path, data.noisy_pair(size=96)["image"])
    assert _cli.main(["analyse", str(path), "--axes", "YX", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["recommendations"][0]["method"] in ("dncnn", "classic-denoise")
    assert all(r["seconds_measured"] and "score" in r for r in out["recommendations"])
    assert _cli.main(["analyse", str(path), "--quick"]) == 0
    printed = capsys.readouterr().out
    assert "1. dncnn" in printed and "rough" in printed
    flat = tmp_path / "flat.tif"
    tifffile.imwrite(flat, np.full((64, 64), 7, np.uint16))
    assert _cli.main(["analyse", str(flat), "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "constant" in err[0]


def test_measured_recommendations_are_scored_and_ordered_by_the_j_invariant_loss():
    noisy = data.noisy_cells(size=128, sigma=0.1, seed=7)["image"]
    recs = analyse(noisy, "YX")["recommendations"]
    assert {r["method"] for r in recs} == {"dncnn", "classic-denoise"}
    losses = [r["score"]["j_invariant_loss"] for r in recs]
    assert losses == sorted(losses)
    # the loss is the error against the clean image plus the noise variance: above the variance
    assert all(loss > r["score"]["noise_variance"] * 0.9 for loss, r in zip(losses, recs, strict=True))
    assert all(r["seconds_measured"] and r["expected_seconds"] > 0 for r in recs)
    assert json.loads(json.dumps(recs)) == recs


def test_blurred_field_gets_deconvolution_first_with_the_measured_width():
    rng = np.random.default_rng(8)
    field = data.microscopy_field(256, seed=1)
    blurred = ndi.gaussian_filter(field, 2.5) + 0.01 * rng.standard_normal(field.shape)
    result = analyse(blurred, "YX", measure=False)
    first = result["recommendations"][0]
    assert first["method"] == "richardson-lucy"
    assert first["params"]["psf_sigma"] == pytest.approx(2.5, rel=0.3)
    _valid(first)
