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
    """The console script in a new process, exactly as a user runs it."""
    return subprocess.run(CLI + list(args), capture_output=True, text=True, **kw)


def run_here(capsys, *args):
    """The same command in this process (no interpreter and torch start-up: seconds saved)."""
    from types import SimpleNamespace

    from napari_ssl_restore import cli as _cli

    code = _cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


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
    (["run", "dcp", "{line}", "-o", "{out}"], "cannot guess the axes"),
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
def test_run_dip_tasks(task, extra, tmp_path, capsys):
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
    res = run_here(capsys, *args)
    assert res.returncode == 0, res.stderr
    out = tifffile.imread(dst)
    assert out.shape == ((48, 48) if task == "sr" else img.shape)
    prov = read_provenance(dst)
    assert prov["params"]["task"] == task and len(prov["stop_iterations"]) == 1


def test_run_dip_inpaint_without_mask_is_exit_2(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "in.tif", np.zeros((16, 16), np.uint8))
    res = run_here(capsys, "run", "dip", str(tmp_path / "in.tif"), "-o", str(tmp_path / "o.tif"),
              "--task", "inpaint")
    assert res.returncode == 2 and res.stderr.startswith("error: DIP inpainting needs a mask")


def test_noise2noise_train_save_then_apply(tmp_path, capsys):
    from napari_ssl_restore.data import noisy_pair

    s = noisy_pair(size=32, sigma=0.1)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(a, s["image"])
    tifffile.imwrite(b, s["target"])
    small = ["--features", "8", "--depth", "2", "--patch-size", "16", "--batch-size", "2",
             "--device", "cpu"]
    res = run_here(capsys, "run", "noise2noise", str(a), "--target", str(b), "-o",
                   str(tmp_path / "o.tif"),
              "--steps", "4", "--save-model", str(tmp_path / "m.pt"), *small)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "m.pt").is_file()
    res = run_here(capsys, "run", "noise2noise", str(b), "-o", str(tmp_path / "o2.tif"), "--mode",
                   "apply",
              "--model", str(tmp_path / "m.pt"), *small)
    assert res.returncode == 0, res.stderr
    assert read_provenance(tmp_path / "o2.tif")["model_loaded"] == str(tmp_path / "m.pt")
    res = run_here(capsys, "run", "noise2noise", str(a), "-o", str(tmp_path / "o3.tif"), *small)
    assert res.returncode == 2 and "needs pairs" in res.stderr


@pytest.mark.parametrize("method", ["frame2frame", "restore-from-restored"])
def test_video_methods_online_then_dncnn_applies_the_tuned_model(method, tmp_path, capsys):
    from napari_ssl_restore.data import noisy_video

    stack = (np.clip(noisy_video(n_frames=3, size=32, sigma=0.1)["image"], 0, 1)
             * 4000).astype(np.uint16)
    src = tmp_path / "movie.tif"
    tifffile.imwrite(src, stack)
    res = run_here(capsys, "run", method, str(src), "-o", str(tmp_path / "o.tif"), "--axes", "TYX",
              "--mode", "online", "--steps-per-frame", "2", "--patch-size", "32",
              "--save-model", str(tmp_path / "m.pt"), "--device", "cpu")
    assert res.returncode == 0, res.stderr
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.shape == stack.shape and out.dtype == np.uint16
    prov = read_provenance(tmp_path / "o.tif")
    assert prov["method"] == method and prov["params"]["mode"] == "online"
    res = run_here(capsys, "run", "dncnn", str(src), "-o", str(tmp_path / "d.tif"), "--axes", "TYX",
              "--model", str(tmp_path / "m.pt"))
    assert res.returncode == 0, res.stderr
    res = run_here(capsys, "run", method, str(src), "-o", str(tmp_path / "x.tif"), "--axes", "YXC")
    assert res.returncode == 2 and res.stderr.startswith("error:") and "T axis" in res.stderr


# --- every method from the command line (in-process: the same code, without the process start) ---
from helpers import TINY, output_shape, sample, variant_id, variants  # noqa: E402

from napari_ssl_restore import cli  # noqa: E402
from napari_ssl_restore.core.io import read_image  # noqa: E402


@pytest.mark.parametrize("method", list_methods())
def test_help_for_every_method(method, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", method, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--overwrite" in out and method in out


@pytest.mark.parametrize("variant", variants(), ids=variant_id)
def test_every_method_runs_from_the_cli(variant, tmp_path, capsys):
    method, settings = variant
    image, axes, extras = sample(method, settings)
    src, dst = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, image, photometric="rgb" if axes.endswith("C") else "minisblack")
    args = ["run", method, str(src), "-o", str(dst), "--axes", axes, "--device", "cpu",
            "--all-outputs"]
    for name, value in {**TINY[method], **settings}.items():
        args += ["--" + name.replace("_", "-"), str(value)]
    for name, value in extras.items():
        tifffile.imwrite(tmp_path / f"{name}.tif", value)
        args += ["--" + name, str(tmp_path / f"{name}.tif")]
    assert cli.main(args) == 0, capsys.readouterr().err
    prov = read_provenance(dst)
    out, out_axes = read_image(dst)
    assert prov["method"] == method and prov["axes"] == axes
    labels = prov["primary_output"] == "labels"
    assert out_axes == (axes.replace("C", "") if labels else axes)  # read back with its axes
    if not labels:
        assert out.shape == output_shape(method, settings, image, axes)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_refuses_to_overwrite_unless_asked_and_never_the_input(tmp_path, capsys):
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.full((16, 16), 7, np.uint8))
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    assert cli.main(["run", "dcp", str(img), "-o", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"precious"
    side = tmp_path / "out_transmission.tif"
    out.unlink()
    side.write_bytes(b"precious")  # a secondary output is protected too, before any work
    assert cli.main(["run", "dcp", str(img), "-o", str(out), "--all-outputs"]) == 2
    assert not out.exists() and side.read_bytes() == b"precious"
    assert cli.main(["run", "dcp", str(img), "-o", str(out), "--all-outputs", "--overwrite"]) == 0
    assert tifffile.imread(side).shape == (16, 16)
    before = img.read_bytes()
    assert cli.main(["run", "dcp", str(img), "-o", str(img), "--overwrite"]) == 2
    assert "one of the inputs" in capsys.readouterr().err and img.read_bytes() == before


@pytest.mark.parametrize("crash", [RuntimeError("disk full"), KeyboardInterrupt()])
@pytest.mark.parametrize("suffix", [".tif", ".ome.zarr"])
def test_a_crash_mid_stack_leaves_the_old_result_and_no_partial_file(crash, suffix, tmp_path,
                                                                     monkeypatch):
    from napari_ssl_restore.physics import haze

    img = tmp_path / "img.tif"
    tifffile.imwrite(img, np.full((4, 16, 16), 7, np.uint8), imagej=True,
                     metadata={"axes": "TYX"})
    out = tmp_path / f"out{suffix}"
    assert cli.main(["run", "dcp", str(img), "-o", str(out), "--all-outputs"]) == 0
    before = sorted(p.name for p in tmp_path.rglob("*"))
    real, calls = haze.dehaze_plane, []

    def crash_on_the_third_plane(*args, **kw):
        calls.append(1)
        if len(calls) == 3:  # planes 1-2 are already written into the new files
            raise crash
        return real(*args, **kw)

    monkeypatch.setattr(haze, "dehaze_plane", crash_on_the_third_plane)
    args = ["run", "dcp", str(img), "-o", str(out), "--all-outputs", "--overwrite",
            "--shared-airlight", "false"]
    if isinstance(crash, KeyboardInterrupt):
        assert cli.main(args) == 130  # Ctrl-C: "error: interrupted"
    else:
        with pytest.raises(RuntimeError):
            cli.main(args)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing new, nothing half
    assert read_image(out)[0].shape == (4, 16, 16) if suffix == ".tif" else True


@pytest.mark.parametrize("shape,kw,axes", [
    ((3, 16, 16), {}, None),  # tifffile stores it as planar RGB: channels or planes? ask
    ((16, 16, 3), {"photometric": "minisblack"}, None),
    ((5, 16, 16), {}, "ZYX"),  # no metadata, 5 planes: a stack (TYX for video methods)
    ((5, 16, 16), {"imagej": True, "metadata": {"axes": "TYX"}}, "TYX"),
    ((16, 16, 3), {"photometric": "rgb"}, "YXC"),
    ((2, 3, 16, 16), {"imagej": True, "metadata": {"axes": "TZYX"}}, "TZYX"),
])
def test_axes_from_the_file(shape, kw, axes, tmp_path):
    from napari_ssl_restore.core.io import choose_axes

    path = tmp_path / "x.tif"
    tifffile.imwrite(path, np.zeros(shape, np.uint8), **kw)
    data, stated = read_image(path)
    if axes is None:
        with pytest.raises(ValueError, match="--axes"):
            choose_axes(data.shape, stated, video=False, source=str(path))
    else:
        assert choose_axes(data.shape, stated, video=False, source=str(path)) == axes


def test_ambiguous_stack_asks_for_axes(tmp_path):
    path = tmp_path / "three.tif"
    tifffile.imwrite(path, np.zeros((3, 16, 16), np.uint16))
    res = run("run", "dcp", str(path), "-o", str(tmp_path / "o.tif"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "CYX" in err[0] and "ZYX" in err[0] and "TYX" in err[0]
    assert not (tmp_path / "o.tif").exists()
