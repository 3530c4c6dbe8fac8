"""The ``quality`` block of a run: judging a result without ground truth (engine.judge), in the
API's provenance, on the CLI's stderr and in the TIFF, and in the dock (label + "Add residual")."""
import json

import numpy as np
import pytest
from helpers import TINY
from scipy import ndimage as ndi

from napari_ssl_restore import restore
from napari_ssl_restore.data import add_noise, cells, noisy_cells
from napari_ssl_restore.engine.judge import COARSE_MAX, residual_quality


def _noise(size=128, sigma=0.1, seed=0):
    return (0.5 + sigma * np.random.default_rng(seed).standard_normal((size, size))).astype(
        np.float32)


def test_white_noise_lightly_smoothed_looks_like_noise():
    noisy = _noise()
    q = residual_quality([noisy], [ndi.gaussian_filter(noisy, 1.0)])
    assert q["verdict"].startswith("The residual looks like noise"), q
    assert q["coarse_power"] < 0.3 and q["task"] == "denoise"
    assert 0.5 < q["noise_ratio"] < 1.2  # most of the noise went into the residual


def test_heavy_smoothing_of_a_structured_field_holds_structure():
    noisy = add_noise(cells(128, seed=1), 0.05, seed=1)
    q = residual_quality([noisy], [ndi.gaussian_filter(noisy, 4.0)])
    assert q["verdict"].startswith("The residual holds structure"), q
    assert q["coarse_power"] > COARSE_MAX and q["signal_correlation"] > 0.1


def test_quality_is_json_and_in_input_units():
    noisy = _noise(64)
    q = residual_quality([noisy[..., None]], [noisy[..., None] - 0.25], scale=4.0)
    assert json.loads(json.dumps(q)) == q
    assert q["residual_mean"] == pytest.approx(1.0)  # 0.25 normalised units times the scale
    assert q["residual_std"] == pytest.approx(0.0, abs=1e-6)


def test_physics_residual_near_one_for_a_consistent_deconvolution():
    rng = np.random.default_rng(3)
    truth = cells(192, seed=2).astype(np.float64)
    data = ndi.gaussian_filter(truth, 2.0) + 0.02 * rng.standard_normal(truth.shape)

    def blur(x):
        return ndi.gaussian_filter(x, (2.0, 2.0, 0))

    good = residual_quality([data], [truth], task="deconv", forward=blur)
    assert 0.7 < good["physics_residual"] < 1.5, good
    assert "consistent with the data" in good["verdict"]
    assert "expected to hold structure" in good["verdict"]
    bad = residual_quality([data], [ndi.gaussian_filter(truth, 3.0)], task="deconv",
                           forward=blur)
    assert bad["physics_residual"] > 1.5 and "does not explain" in bad["verdict"]
    overfit = residual_quality([data], [data], task="deconv", physics_mse=0.0)
    assert "fits the noise" in overfit["verdict"]


def test_restore_full_output_has_the_quality_block():
    img = noisy_cells(size=64, sigma=0.1)["image"]
    prov = restore(img, "dncnn", full_output=True, **TINY["dncnn"])["provenance"]
    q = prov["quality"]
    assert q["task"] == "denoise" and q["planes"] == 1
    assert q["verdict"].startswith("The residual looks like noise"), q
    json.dumps(prov)


def test_a_stack_is_judged_on_a_few_planes_and_dip_reports_its_data_term():
    img = noisy_cells(size=32, sigma=0.1)["image"]
    stack = (np.clip(np.stack([img] * 5), 0, 1) * 4000).astype(np.uint16)
    q = restore(stack, "dncnn", axes="ZYX", full_output=True,
                **TINY["dncnn"])["provenance"]["quality"]
    assert q["planes"] == 3 and abs(q["residual_mean"]) < 0.05 * 4000
    prov = restore(img, "dip", task="deconv", full_output=True,
                   **{**TINY["dip"], "psf_sigma": 1.0})["provenance"]
    assert len(prov["data_residual"]) == 1 and prov["quality"]["physics_residual"] > 0
    assert "physics residual" in prov["quality"]["verdict"]


def test_outputs_that_do_not_reproduce_the_input_are_not_judged():
    img = noisy_cells(size=32, sigma=0.1)["image"]
    q = restore(img, "double-dip", task="segment", full_output=True,
                **TINY["double-dip"])["provenance"]["quality"]
    assert q == {"verdict": "Not judged: the 'labels' output is not meant to reproduce the input."}


def test_cli_prints_the_verdict_and_the_tiff_keeps_it(tmp_path, capsys):
    import tifffile

    from napari_ssl_restore import cli
    from napari_ssl_restore.core.io import read_provenance

    src, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, noisy_cells(size=64, sigma=0.1)["image"])
    args = ["run", "dncnn", str(src), "-o", str(out), "--tile-size", "32", "--tile-overlap", "8"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "quality: The residual looks like noise" in err and "noise_ratio" in err
    assert read_provenance(out)["quality"]["verdict"].startswith("The residual looks like noise")


def test_cli_prints_only_the_numbers_the_verdict_reads(capsys):
    from napari_ssl_restore import cli

    look = {"noise_ratio": 5820.0, "coarse_power": 40.0, "signal_correlation": 0.6,
            "whiteness": 0.9}
    cli._print_quality({"task": "dehaze", "verdict": "not judged by its look", **look})
    err = capsys.readouterr().err
    assert "not judged by its look" in err and "noise_ratio" not in err and "whiteness" not in err
    cli._print_quality({"task": "deconv", "verdict": "v", "physics_residual": 1.02, **look})
    err = capsys.readouterr().err
    assert "physics_residual 1.02" in err and "noise_ratio" not in err
    cli._print_quality({"task": "denoise", "verdict": "v", **look})
    assert "noise_ratio 5.82e+03" in capsys.readouterr().err


@pytest.mark.napari
def test_the_dock_shows_the_verdict_and_adds_the_residual(make_napari_viewer):
    pytest.importorskip("napari")
    from test_napari import open_dock

    viewer = make_napari_viewer()
    img = noisy_cells(size=64, sigma=0.1)["image"]
    layer = viewer.add_image(img, name="cells")
    _dock, widget = open_dock(viewer, "dncnn")
    assert not widget.residual_button.enabled  # nothing to subtract before a run
    for name, value in TINY["dncnn"].items():
        widget.params[name].value = value
    widget.run(sync=True)
    assert widget.quality.value.startswith("quality: The residual looks like noise")
    assert widget.residual_button.enabled
    widget.residual_button.native.click()
    added = viewer.layers["cells dncnn input-output"]
    assert added.data.dtype == np.float32 and added.data.shape == img.shape
    expected = img - viewer.layers["cells dncnn"].data
    np.testing.assert_allclose(added.data, expected, atol=1e-6)
    assert list(added.scale) == list(layer.scale)


@pytest.mark.napari
def test_the_residual_is_lazy_for_dask_and_refused_for_another_shape(make_napari_viewer):
    pytest.importorskip("napari")
    da = pytest.importorskip("dask.array")
    from test_napari import open_dock

    viewer = make_napari_viewer()
    img = noisy_cells(size=32, sigma=0.1)["image"]
    viewer.add_image(da.from_array(np.stack([img] * 2), chunks=(1, 32, 32)), name="lazy")
    _dock, widget = open_dock(viewer, "dncnn")
    widget.axes.value = "ZYX"
    for name, value in TINY["dncnn"].items():
        widget.params[name].value = value
    widget.run(sync=True)
    residual = widget.add_residual()
    assert isinstance(residual.data, da.Array) and residual.data.dtype == np.float32
    assert residual.data.shape == (2, 32, 32)

    viewer.add_image(img, name="small")
    _dock, sr = open_dock(viewer, "dip")
    sr.image.value = viewer.layers["small"]
    for name, value in {**TINY["dip"], "task": "sr"}.items():
        sr.params[name].value = value
    sr.run(sync=True)
    assert "quality:" in sr.quality.value and not sr.residual_button.enabled
