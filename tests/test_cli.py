"""The console script, run as a user would (subprocess)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_ssl_restore.core.io import read_provenance
from napari_ssl_restore.core.registry import list_methods

CLI = [sys.executable, "-m", "napari_ssl_restore.cli"]


def run(*args, **kw):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, **kw)


def test_list():
    res = run("list")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0::2] == list_methods()
    assert all(line.startswith("    ") for line in lines[1::2])


def test_run_dcp_writes_tiff_with_provenance(tmp_path, hazy_small):
    src, dst = tmp_path / "hazy.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, hazy_small["image"], photometric="rgb")
    res = run("run", "dcp", str(src), "-o", str(dst), "--patch-size", "7", "--refine", "true",
              "--all-outputs", "--seed", "3")
    assert res.returncode == 0, res.stderr
    out = tifffile.imread(dst)
    assert out.shape == hazy_small["image"].shape and out.dtype == np.uint8
    prov = read_provenance(dst)
    assert prov["method"] == "dcp" and prov["params"]["patch_size"] == 7 and prov["seed"] == 3
    assert prov["version"] and prov["input"].endswith("hazy.tif")
    assert tifffile.imread(tmp_path / "out_transmission.tif").shape == out.shape[:2]
    # the CLI and the API agree
    from napari_ssl_restore import restore

    np.testing.assert_array_equal(out, restore(hazy_small["image"], "dcp", patch_size=7))


@pytest.mark.parametrize("args,msg", [
    (["run", "dcp", "{missing}", "-o", "{out}"], "no such file"),
    (["run", "dcp", "{bad}", "-o", "{out}"], "cannot read it as a TIFF"),
    (["run", "dcp", "{img}", "-o", "{out}", "--omega", "2"], "omega"),
    (["run", "dcp", "{img}", "-o", "{out}", "--omega", "abc"], "expects a number"),
    (["run", "dcp", "{img}", "-o", "{out}", "--axes", "TYX"], "3 letters"),
    (["run", "dcp", "{img}", "-o", "{out}", "--bogus", "1"], "unrecognized arguments"),
    (["run", "dcp", "{img}", "-o", "{tmp}/nodir/out.tif"], "does not exist"),
    (["run", "dcp", "{img}", "-o", "{tmp}/out.png"], ".tif"),
    (["run", "nope", "{img}", "-o", "{out}"], "invalid choice"),
    (["run", "dcp", "{nan}", "-o", "{out}"], "NaN"),
    (["run", "dcp", "{line}", "-o", "{out}"], "Cannot guess the axes"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(args, msg, tmp_path):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.zeros((16, 16), np.uint8))
    bad = tmp_path / "bad.tif"
    bad.write_text("hello")
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((8, 8), np.nan, np.float32))
    line = tmp_path / "line.tif"
    tifffile.imwrite(line, np.zeros((2, 2, 2, 8, 8), np.float32))
    fmt = {"missing": tmp_path / "missing.tif", "out": tmp_path / "o.tif", "bad": bad, "img": img,
           "tmp": tmp_path, "nan": nan, "line": line}
    res = run(*[a.format(**fmt) for a in args])
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and msg in err[0], res.stderr
    assert "Traceback" not in res.stderr


def test_demo_writes_results_and_figure(tmp_path):
    res = run("demo", "-o", str(tmp_path / "demo"), "--methods", "dcp",
              env=dict(os.environ, MPLBACKEND="Agg"))
    assert res.returncode == 0, res.stderr
    files = {p.name for p in (tmp_path / "demo").iterdir()}
    assert "demo.png" in files and "dcp_0_image.tif" in files and "dcp_0_transmission.tif" in files
    assert "PSNR" in res.stdout


def test_console_script_installed():
    import shutil

    exe = shutil.which("napari-ssl-restore")
    if exe is None:
        pytest.skip("console script not on PATH (package not installed)")
    assert subprocess.run([exe, "list"], capture_output=True, text=True).returncode == 0


@pytest.mark.parametrize("task,extra", [("deconv", "psf"), ("inpaint", "mask"), ("sr", None)])
def test_run_dip_tasks(task, extra, tmp_path):
    from napari_ssl_restore.data import noisy_cells

    img = (np.clip(noisy_cells(size=24)["image"], 0, 1) * 255).astype(np.uint8)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, img)
    args = ["run", "dip", str(src), "-o", str(dst), "--task", task, "--max-iter", "4",
            "--channels", "8", "--depth", "2", "--input-depth", "4", "--device", "cpu",
            "--sr-factor", "2"]
    if extra == "psf":
        tifffile.imwrite(tmp_path / "psf.tif", np.ones((3, 3), np.float32))
        args += ["--psf", str(tmp_path / "psf.tif")]
    if extra == "mask":
        mask = np.zeros_like(img)
        mask[5:10, 5:10] = 1
        tifffile.imwrite(tmp_path / "mask.tif", mask)
        args += ["--mask", str(tmp_path / "mask.tif")]
    res = run(*args)
    assert res.returncode == 0, res.stderr
    out = tifffile.imread(dst)
    assert out.shape == ((48, 48) if task == "sr" else img.shape)
    prov = read_provenance(dst)
    assert prov["params"]["task"] == task and len(prov["stop_iterations"]) == 1


def test_run_dip_inpaint_without_mask_is_exit_2(tmp_path):
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((16, 16), np.uint8))
    res = run("run", "dip", str(tmp_path / "in.tif"), "-o", str(tmp_path / "o.tif"),
              "--task", "inpaint")
    assert res.returncode == 2 and res.stderr.startswith("error: DIP inpainting needs a mask")


def test_noise2noise_train_save_then_apply(tmp_path):
    from napari_ssl_restore.data import noisy_pair

    s = noisy_pair(size=32, sigma=0.1)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(a, s["image"])
    tifffile.imwrite(b, s["target"])
    small = ["--features", "8", "--depth", "2", "--patch-size", "16", "--batch-size", "2",
             "--device", "cpu"]
    res = run("run", "noise2noise", str(a), "--target", str(b), "-o", str(tmp_path / "o.tif"),
              "--steps", "4", "--save-model", str(tmp_path / "m.pt"), *small)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "m.pt").is_file()
    res = run("run", "noise2noise", str(b), "-o", str(tmp_path / "o2.tif"), "--mode", "apply",
              "--model", str(tmp_path / "m.pt"), *small)
    assert res.returncode == 0, res.stderr
    assert read_provenance(tmp_path / "o2.tif")["model_loaded"] == str(tmp_path / "m.pt")
    res = run("run", "noise2noise", str(a), "-o", str(tmp_path / "o3.tif"), *small)
    assert res.returncode == 2 and "needs pairs" in res.stderr


@pytest.mark.parametrize("method", ["frame2frame", "restore-from-restored"])
def test_video_methods_online_then_dncnn_applies_the_tuned_model(method, tmp_path):
    from napari_ssl_restore.data import noisy_video

    stack = (np.clip(noisy_video(n_frames=3, size=32, sigma=0.1)["image"], 0, 1)
             * 4000).astype(np.uint16)
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, stack)
    res = run("run", method, str(src), "-o", str(tmp_path / "o.tif"), "--axes", "TYX",
              "--mode", "online", "--steps-per-frame", "2", "--patch-size", "32",
              "--save-model", str(tmp_path / "m.pt"), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.shape == stack.shape and out.dtype == np.uint16
    prov = read_provenance(tmp_path / "o.tif")
    assert prov["method"] == method and prov["params"]["mode"] == "online"
    res = run("run", "dncnn", str(src), "-o", str(tmp_path / "d.tif"), "--axes", "TYX",
              "--model", str(tmp_path / "m.pt"))
    assert res.returncode == 0, res.stderr
    res = run("run", method, str(src), "-o", str(tmp_path / "x.tif"), "--axes", "YXC")
    assert res.returncode == 2 and res.stderr.startswith("error:") and "T axis" in res.stderr
