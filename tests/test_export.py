"""bioimage.io export: a model saved by the plugin becomes a model zip of the current specification
that bioimage.io's own test passes, loads back wherever ``model=`` is accepted, and comes from the
API, the CLI and (tests/test_napari.py) the dock."""
import ast
import io
import os
import zipfile

import numpy as np
import pytest

pytest.importorskip("bioimageio.core")
torch = pytest.importorskip("torch")
yaml = pytest.importorskip("yaml")

from napari_ssl_restore import export_bioimageio, restore  # noqa: E402
from napari_ssl_restore.cli import main  # noqa: E402
from napari_ssl_restore.core import models  # noqa: E402
from napari_ssl_restore.data import noisy_pair  # noqa: E402

pytestmark = pytest.mark.filterwarnings(  # bioimageio.core loads the TorchScript weights
    "ignore:`torch.jit.load` is deprecated:DeprecationWarning")

PERCENTILES = {"kind": "percentile", "low": 0.1, "high": 99.9}


@pytest.fixture(scope="module")
def n2n(tmp_path_factory):
    """A tiny Noise2Noise U-Net saved by a training run, its training pair, and its export."""
    folder = tmp_path_factory.mktemp("n2n")
    s = noisy_pair(size=32, sigma=0.1)
    pt = folder / "n2n.pt"
    restore(s["image"], "noise2noise", target=s["target"], steps=2, patch_size=16, features=8,
            depth=2, save_model=str(pt))
    zipped = folder / "n2n.zip"
    written = export_bioimageio(str(pt), zipped, s["image"])
    assert written == str(zipped.resolve())
    return {"pt": pt, "zip": zipped, "image": s["image"], "target": s["target"]}


def _rdf(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


def test_the_zip_passes_bioimageio_test(n2n):
    from bioimageio.core import test_model

    summary = test_model(str(n2n["zip"]))
    assert summary.status == "passed", summary.format()
    tested = {d.name for d in summary.details}
    assert any("torchscript" in name for name in tested)
    assert any("pytorch_state_dict" in name for name in tested)


def test_the_zip_holds_the_current_spec_and_what_it_promises(n2n):
    with zipfile.ZipFile(n2n["zip"]) as z:
        names = set(z.namelist())
        readme = z.read("README.md").decode()
        test_input = np.load(io.BytesIO(z.read("test_input.npy")))
    assert {"rdf.yaml", "weights.pt", "weights_torchscript.pt", "napari_ssl_restore_network.py",
            "README.md", "cover.png", "test_input.npy", "test_output.npy"} <= names
    rdf = _rdf(n2n["zip"])
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.")
    assert rdf["license"] == "BSD-3-Clause"
    assert [a["name"] for a in rdf["authors"]] == ["napari-ssl-restore developers"]
    assert any(c.get("doi") == "10.48550/arXiv.1803.04189" for c in rdf["cite"])  # Noise2Noise
    assert set(rdf["weights"]) == {"torchscript", "pytorch_state_dict"}
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert inp["axes"][2]["size"] == {"min": 16, "step": 4}  # 2**depth
    scale = next(p for p in inp["preprocessing"] if p["id"] == "scale_range")["kwargs"]
    assert (scale["min_percentile"], scale["max_percentile"]) == (0.1, 99.9)
    assert out["axes"][2]["size"] == {"tensor_id": "input", "axis_id": "y"}
    ours = rdf["config"]["napari_ssl_restore"]
    assert ours["architecture"] == "unet" and ours["provenance"]["method"] == "noise2noise"
    np.testing.assert_array_equal(test_input[0, 0], n2n["image"])  # the sample, as given
    for section in ("## Training (provenance)", "## How to use it", "## Validation",
                    "normalised units"):
        assert section in readme


def test_the_architecture_file_needs_only_torch_and_numpy(n2n):
    with zipfile.ZipFile(n2n["zip"]) as z:
        source = z.read("napari_ssl_restore_network.py").decode()
        state = torch.load(io.BytesIO(z.read("weights.pt")), weights_only=True)
        x = np.load(io.BytesIO(z.read("test_input.npy")))
        expected = np.load(io.BytesIO(z.read("test_output.npy")))
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "torch", "numpy"}
    namespace: dict = {"__name__": "exported_network"}
    exec(compile(source, "napari_ssl_restore_network.py", "exec"), namespace)  # noqa: S102
    kwargs = _rdf(n2n["zip"])["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    net = namespace["PortableNet"](**kwargs)
    net.load_state_dict(state)
    lo, hi = np.percentile(x, [0.1, 99.9])
    with torch.no_grad():
        got = net.eval()(torch.from_numpy((x - lo) / (hi - lo + 1e-6)).float()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_zip_loads_back_wherever_a_model_is_accepted(n2n):
    pt, zipped = str(n2n["pt"]), str(n2n["zip"])
    a, b = models.load_checkpoint(pt), models.load_checkpoint(zipped)
    assert (b["architecture"], b["config"]) == (a["architecture"], a["config"])
    assert b["state_dict"].keys() == a["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(b["state_dict"][k], v)
    assert b["provenance"]["method"] == "noise2noise" and b["provenance"]["bioimageio"]
    np.testing.assert_array_equal(restore(n2n["target"], "dncnn", model=zipped),
                                  restore(n2n["target"], "dncnn", model=pt))
    np.testing.assert_array_equal(
        restore(n2n["target"], "noise2noise", mode="apply", model=zipped),
        restore(n2n["target"], "noise2noise", mode="apply", model=pt))


def test_a_zip_of_another_architecture_is_refused(n2n, tmp_path):
    rdf = _rdf(n2n["zip"])
    del rdf["config"]["napari_ssl_restore"]
    rdf["name"] = "someone else's model"
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(n2n["zip"]) as src, zipfile.ZipFile(foreign, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, yaml.safe_dump(rdf) if name == "rdf.yaml" else src.read(name))
    with pytest.raises(ValueError, match="did not export"):
        models.load_checkpoint(foreign)
    with pytest.raises(ValueError, match="bioimage.io software"):
        restore(n2n["image"], "dncnn", model=str(foreign))


def test_cli_exports_and_never_overwrites(n2n, tmp_path, capsys):
    out = tmp_path / "cli.zip"
    assert main(["export-bioimageio", str(n2n["pt"]), str(out), "--name", "tiny N2N (test)"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert _rdf(out)["name"] == "tiny N2N (test)"
    before = out.stat().st_mtime_ns
    assert main(["export-bioimageio", str(n2n["pt"]), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--overwrite" in err and err.count("\n") == 1
    assert out.stat().st_mtime_ns == before
    assert main(["export-bioimageio", str(n2n["pt"]), str(out), "--overwrite"]) == 0
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial")]  # no leftovers
    assert main(["export-bioimageio", str(n2n["pt"]), str(tmp_path / "m.tif")]) == 2
    assert ".zip" in capsys.readouterr().err


def test_bad_requests_say_what_to_fix(n2n, tmp_path):
    pt = str(n2n["pt"])
    with pytest.raises(ValueError, match="letters, digits"):
        export_bioimageio(pt, tmp_path / "a.zip", name="bad: name")
    with pytest.raises(ValueError, match="at least 16"):
        export_bioimageio(pt, tmp_path / "b.zip", np.random.default_rng(0).random((8, 8)))
    with pytest.raises(ValueError, match="1 channel"):
        export_bioimageio(pt, tmp_path / "c.zip", np.zeros((32, 32, 3), np.float32), axes="YXC")
    with pytest.raises(ValueError, match="flat"):
        export_bioimageio(pt, tmp_path / "d.zip", np.ones((32, 32), np.float32))
    with pytest.raises(ValueError, match="one of the inputs"):
        export_bioimageio(str(n2n["zip"]), n2n["zip"], overwrite=True)
    assert not list(tmp_path.iterdir())


def test_a_generator_that_needs_the_dcp_step_is_refused(tmp_path):
    from napari_ssl_restore.nets.gan import ResnetGenerator

    net = ResnetGenerator(1, 1, features=4, blocks=1, downs=1, norm="none")
    prov = {"method": "cycle-dehaze", "params": {"translation": "physics", "pre_dcp": True}}
    pt = models.save_model(models.checkpoint(net, architecture="resnet-generator",
                                             normalization=PERCENTILES, provenance=prov),
                           tmp_path / "g.pt")
    with pytest.raises(ValueError, match="pre_dcp=False"):
        export_bioimageio(pt, tmp_path / "g.zip")
    assert not (tmp_path / "g.zip").exists()


# --- every architecture the plugin saves ----------------------------------------------------------

def _tiny(kind: str):
    """``(architecture, network, provenance)`` of a tiny network of each kind the plugin saves."""
    from napari_ssl_restore.nets.dncnn import DnCNN
    from napari_ssl_restore.nets.gan import ContentDeblurrer, ResnetGenerator
    from napari_ssl_restore.nets.unet import UNet

    return {
        "dncnn": ("dncnn", DnCNN(1, 1, features=4, depth=3), {"method": "frame2frame"}),
        "unet-noise-map": ("unet", UNet(1, 1, features=4, depth=2, residual=True, noise_map=True),
                           {"method": "dncnn"}),
        "resnet-generator": ("resnet-generator", ResnetGenerator(1, 1, features=4, blocks=1,
                                                                 downs=1, norm="none"),
                             {"method": "cycle-dehaze"}),
        "resnet-generator-sr": ("resnet-generator",
                                ResnetGenerator(1, 1, features=4, blocks=1, downs=0, scale=2,
                                                norm="none"),
                                {"method": "physics-gan", "params": {"task": "sr",
                                                                     "sr_factor": 2}}),
        "content-deblurrer": ("content-deblurrer", ContentDeblurrer(1, features=4, blocks=1),
                              {"method": "disentangled-deblur"}),
    }[kind]


KINDS = ["dncnn", "unet-noise-map", "resnet-generator", "resnet-generator-sr", "content-deblurrer"]


def _saved(kind: str, folder) -> str:
    torch.manual_seed(0)
    arch, net, prov = _tiny(kind)
    with torch.no_grad():  # away from the identity the networks start as
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return models.save_model(models.checkpoint(net, architecture=arch, normalization=PERCENTILES,
                                               provenance=prov), folder / f"{kind}.pt")


@pytest.mark.parametrize("kind", KINDS)
def test_every_architecture_exports_and_loads_back(kind, tmp_path):
    pt = _saved(kind, tmp_path)
    out = export_bioimageio(pt, tmp_path / f"{kind}.zip")
    rdf = _rdf(out)
    a, b = models.load_checkpoint(pt), models.load_checkpoint(out)
    assert b["architecture"] == a["architecture"] and b["config"] == a["config"]
    assert all(torch.equal(b["state_dict"][k], v) for k, v in a["state_dict"].items())
    noise = rdf["config"]["napari_ssl_restore"]["noise_model"]
    with zipfile.ZipFile(out) as z:
        readme = z.read("README.md").decode()
        shapes = [np.load(io.BytesIO(z.read(f"test_{t}.npy"))).shape for t in ("input", "output")]
    if kind == "unet-noise-map":  # measured on the test image, baked in, documented
        assert noise is not None and noise["b"] > 0
        kwargs = rdf["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
        assert kwargs["noise"] == [noise["a"], noise["b"]]
        assert "assumes that noise level" in readme
        assert any(c.get("doi") == "10.1109/TIP.2018.2839891" for c in rdf["cite"])  # FFDNet
    else:
        assert noise is None
    zoom = 2 if kind.endswith("-sr") else 1
    assert shapes[1][-2:] == tuple(zoom * s for s in shapes[0][-2:])
    assert rdf["outputs"][0]["axes"][2]["scale"] == 1 / zoom


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_every_architecture_passes_bioimageio_test(kind, tmp_path):
    from bioimageio.core import test_model

    out = export_bioimageio(_saved(kind, tmp_path), tmp_path / f"{kind}.zip")
    summary = test_model(out)
    assert summary.status == "passed", summary.format()
