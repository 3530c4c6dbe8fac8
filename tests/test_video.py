"""The shipped denoiser and the video methods (dncnn, frame2frame, restore-from-restored)."""
import json
import logging
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_ssl_restore import restore  # noqa: E402
from napari_ssl_restore.core import models  # noqa: E402
from napari_ssl_restore.data import add_noise, moving_scene, noisy_video  # noqa: E402
from napari_ssl_restore.methods import frame2frame as f2f  # noqa: E402
from napari_ssl_restore.physics.noise import estimate_noise  # noqa: E402

FAST = {"frame2frame": {"steps_per_frame": 2, "epochs": 1, "patch_size": 32, "batch_size": 2,
                        "early_stop": False},
        "restore-from-restored": {"steps_per_frame": 2, "epochs": 1, "patch_size": 32,
                                  "batch_size": 2}}
VIDEO_METHODS = list(FAST)


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2))


@pytest.fixture(scope="module")
def video():
    return noisy_video(n_frames=3, size=48, sigma=25 / 255, seed=3)


# --- shipped weights ------------------------------------------------------------------------------

def test_shipped_weights_verify_and_load():
    manifest = models.shipped_manifest()
    assert models.SHIPPED_DENOISER in manifest and "dncnn-blind-gray" in manifest
    for name, entry in manifest.items():  # every shipped model, by name
        path = os.path.join(models.WEIGHTS_DIR, entry["file"])
        assert models.sha256_file(path) == entry["sha256"]
        assert os.path.getsize(path) < 5e6
        ckpt = models.shipped_model(name)
        assert ckpt["architecture"] == entry["architecture"]
        assert ckpt["provenance"]["sha256"] == entry["sha256"]
        net = models.build(ckpt)
        assert net.config == entry["config"]


def test_the_noise_aware_model_by_name_denoises_an_image_it_never_saw():
    """The noise-aware U-Net ships by name; on a held-out photograph it measures the noise itself."""
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio as psnr

    clean = data.camera()[128:256, 128:256].astype(np.float32) / 255
    noisy = clean + 25 / 255 * np.random.default_rng(0).standard_normal(clean.shape).astype(
        np.float32)
    out = restore(noisy, "dncnn", model="unet-noise-aware-gray", full_output=True)
    assert out["provenance"]["noise_model"]["b"][0] > 0
    gain = psnr(clean, np.clip(out["image"], 0, 1), data_range=1) - psnr(clean, noisy,
                                                                          data_range=1)
    assert gain > 6, gain


def test_corrupt_shipped_weights_are_refused(tmp_path, monkeypatch):
    for name in os.listdir(models.WEIGHTS_DIR):
        shutil.copy(os.path.join(models.WEIGHTS_DIR, name), tmp_path / name)
    entry = json.loads((tmp_path / "manifest.json").read_text())[models.SHIPPED_DENOISER]
    weights = tmp_path / entry["file"]
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(models, "WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="corrupt.*reinstall"):
        models.shipped_model()


def test_shipped_dncnn_denoises_an_image_it_never_saw():
    from napari_ssl_restore.data import cells

    clean = cells(96, seed=5)
    noisy = add_noise(clean, 25 / 255, seed=9)
    out = restore(noisy, "dncnn", axes="YX")
    assert out.dtype == np.float32 and out.shape == clean.shape
    assert psnr(out, clean) > psnr(noisy, clean) + 5


def test_dncnn_self_ensemble_is_rotation_equivariant_and_close_to_plain():
    from napari_ssl_restore.data import cells

    noisy = add_noise(cells(48, seed=2), 25 / 255, seed=3)
    blind = {"model": "dncnn-blind-gray"}  # a fixed network: exact symmetry
    ens = restore(noisy, "dncnn", axes="YX", ensemble=True, **blind)
    turned = restore(np.rot90(noisy).copy(), "dncnn", axes="YX", ensemble=True, **blind)
    np.testing.assert_allclose(np.rot90(ens), turned, atol=1e-5)  # averaged over the 8 symmetries
    plain = restore(noisy, "dncnn", axes="YX", **blind)
    assert np.abs(np.rot90(plain) - restore(np.rot90(noisy).copy(), "dncnn", axes="YX",
                                            **blind)).max() > 1e-4
    assert 0 < np.abs(ens - plain).mean() < 0.02
    # the noise-aware default: its noise map is measured on the (turned) image, which moves the
    # fit a little, so the ensemble is equivariant only up to that
    ens = restore(noisy, "dncnn", axes="YX", ensemble=True)
    turned = restore(np.rot90(noisy).copy(), "dncnn", axes="YX", ensemble=True)
    np.testing.assert_allclose(np.rot90(ens), turned, atol=2e-3)
    assert 0 < np.abs(ens - restore(noisy, "dncnn", axes="YX")).mean() < 0.02


def test_dncnn_runs_channel_by_channel_and_keeps_dtype():
    rng = np.random.default_rng(0)
    rgb = (rng.random((40, 36, 3)) * 255).astype(np.uint8)
    before = rgb.copy()
    out = restore(rgb, "dncnn", axes="YXC")
    assert out.shape == rgb.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(rgb, before)


def test_dncnn_applies_a_saved_noise2noise_model(tmp_path):
    from napari_ssl_restore.data import noisy_pair

    s = noisy_pair(size=32, sigma=0.1)
    path = tmp_path / "n2n.pt"
    restore(s["image"], "noise2noise", target=s["target"], steps=2, patch_size=16, features=8,
            depth=2, save_model=str(path))
    out = restore(s["image"], "dncnn", model=str(path), full_output=True)
    assert out["image"].shape == s["image"].shape
    assert out["provenance"]["architecture"] == "unet"


def test_missing_model_file_is_a_clear_error(video):
    with pytest.raises(FileNotFoundError, match="not found"):
        restore(video["image"], "frame2frame", axes="TYX", model="/nonexistent/model.pt")


# --- flow, warping, masks, noise model ---------------------------------------------------------------

def test_flow_and_warp_recover_a_known_motion():
    from scipy import ndimage as ndi
    from skimage import data

    from napari_ssl_restore.physics import flow as fl

    img = data.camera()[100:228, 100:228].astype(np.float32)[..., None] / 255
    moved = ndi.shift(img, (1.5, -2.0, 0), order=3, mode="nearest")
    inner = (slice(16, -16), slice(16, -16))
    for method in f2f.FLOWS:
        flow = f2f.optical_flow(img[None], moved[None], method)
        assert flow.shape == (1, 2, 128, 128)
        f = flow[0].numpy()
        assert abs(np.median(f[0][inner]) - 1.5) < 0.2
        assert abs(np.median(f[1][inner]) + 2.0) < 0.2
        warped, inside = fl.warp(torch.from_numpy(moved.transpose(2, 0, 1))[None], flow)
        err = np.abs(warped[0, 0].numpy() - img[..., 0])[inner].mean()
        assert err < 0.25 * np.abs(moved - img)[inner].mean()
    # half a pixel: bilinear averages two pixels (fine texture fades), bicubic keeps more of it
    stripes = torch.from_numpy(np.tile(np.sin(np.arange(64) * 2.2), (8, 1)).astype(np.float32))
    half = torch.zeros((1, 2, 8, 64))
    half[:, 1] = 0.5
    truth = np.sin((np.arange(64) + 0.5) * 2.2)[2:-2]
    err = {mode: np.abs(fl.warp(stripes[None, None], half, mode)[0][0, 0, 4, 2:-2].numpy()
                        - truth).mean() for mode in ("bilinear", "bicubic")}
    assert err["bicubic"] < 0.6 * err["bilinear"]
    flow = torch.zeros((1, 2, 20, 20))
    flow[:, 1] = 5.0  # samples 5 px to the right: the last 5 columns come from outside
    zeros = torch.zeros((1, 1, 20, 20))
    _, inside = fl.warp(zeros, flow)
    assert not inside[0, :, 15:].any() and inside[0, :, :15].all()
    mask = fl.occlusion_mask(flow, zeros, zeros, inside, divergence=0.75, warp_error=0.1,
                             dilation=1)[0, 0]
    assert not mask[:, 14:].any() and mask[:, :14].all()


def test_device_tvl1_matches_scikit_image_on_a_batch_of_motions():
    """Batched pairs (a shift, a rotation, a shear) are solved at once, each as accurately as
    scikit-image's TV-L1 solves it alone (end-point error within 10 %, or 0.05 px)."""
    from skimage import data, registration, transform

    from napari_ssl_restore.physics.flow import tvl1

    ref = data.camera()[64:160, 64:160].astype(np.float32) / 255
    rr, cc = np.mgrid[0:96, 0:96].astype(np.float32)
    truths = [np.stack([np.full_like(rr, 1.3), np.full_like(rr, -0.7)]),
              np.stack([0.03 * (cc - 48), -0.03 * (rr - 48)]),
              np.stack([0.02 * (cc - 48), np.zeros_like(rr)])]
    moving = [transform.warp(ref, np.stack([rr - t[0], cc - t[1]]), order=3, mode="edge")
              for t in truths]  # moving[x + t] = ref[x]
    ours = tvl1(torch.from_numpy(np.stack([ref] * 3)),
                torch.from_numpy(np.stack(moving).astype(np.float32))).numpy()
    inner = (slice(None), slice(12, -12), slice(12, -12))
    for k, t in enumerate(truths):
        theirs = registration.optical_flow_tvl1(ref, moving[k])
        epe = [float(np.sqrt(((f - t) ** 2).sum(0))[inner[1:]].mean()) for f in (ours[k], theirs)]
        assert epe[0] <= max(1.1 * epe[1], epe[1] + 0.05), (k, epe)


@pytest.mark.parametrize("kind", ["gaussian", "poisson-gaussian", "correlated"])
def test_noise_model_estimation(kind):
    clean = moving_scene(3, 96, "cells")
    kw = {"gaussian": {"sigma": 0.1}, "poisson-gaussian": {"sigma": 0.05, "poisson": 30.0},
          "correlated": {"sigma": 0.1, "correlation": 1.0}}[kind]
    noisy = add_noise(clean, **kw)
    model = estimate_noise(noisy[..., None], clean[..., None], "auto", True)
    assert model.offset == pytest.approx(kw["sigma"] ** 2, rel=0.2)
    assert model.gain == pytest.approx(1 / kw.get("poisson", np.inf), abs=0.006)
    gen = torch.Generator().manual_seed(1)
    synth = model.sample(torch.from_numpy(clean[:, None].astype(np.float32)), gen)[:, 0].numpy()
    real = noisy - clean

    def corr(a):
        return float((a[:, 1:] * a[:, :-1]).mean() / (a * a).mean())

    assert corr(synth) == pytest.approx(corr(real), abs=0.08)
    assert synth.std() == pytest.approx(real.std(), rel=0.1)


# --- the video methods -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", VIDEO_METHODS)
@pytest.mark.parametrize("mode", ["online", "offline"])
def test_video_methods_restore_every_frame(method, mode, video, tmp_path):
    stack = np.clip(np.rint(video["image"] * 4000 + 200), 0, 65535).astype(np.uint16)
    before = stack.copy()
    path = tmp_path / "tuned.pt"
    out = restore(stack, method, axes="TYX", mode=mode, save_model=str(path), full_output=True,
                  **FAST[method])
    img = out["image"]
    assert img.shape == stack.shape and img.dtype == np.uint16
    np.testing.assert_array_equal(stack, before)
    prov = out["provenance"]
    assert prov["method"] == method and prov["params"]["mode"] == mode
    assert not prov["stopped"] and prov["planes_done"] == 3 and prov["steps"] > 0
    assert prov["fusion_radius"] == 2 and prov["fusion_seconds"] > 0  # the default
    assert not np.array_equal(img, stack)
    # the fine-tuned network differs from the shipped one and reloads for dncnn
    shipped = models.shipped_model()["state_dict"]
    tuned = models.load_checkpoint(path)
    assert any(not torch.equal(shipped[k], tuned["state_dict"][k]) for k in shipped)
    again = restore(stack, "dncnn", axes="TYX", model=str(path))
    assert again.shape == stack.shape


def test_held_out_blocks_keep_the_best_weights():
    from napari_ssl_restore.engine.video import HeldOut
    from napari_ssl_restore.nets.dncnn import DnCNN

    rng = np.random.default_rng(0)
    net = DnCNN(1, 1, 4, 3)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.01)
    clean = torch.rand(2, 1, 64, 64)
    fields = [clean + 0.1 * torch.randn_like(clean), clean + 0.1 * torch.randn_like(clean),
              torch.ones(2, 1, 64, 64)]
    watch = HeldOut(net, fields, f2f._masked_l1, rng, steps=50, patch=32, crops=4, patience=2)
    held = 1 - watch.train_mask
    assert float(held.mean()) == 1 / 16 and torch.equal(held[0], held[1])  # 1 of 16 blocks
    assert float((watch.m > 0).float().mean()) > 0  # the windows hold held-out pixels
    start = {k: v.clone() for k, v in net.state_dict().items()}
    assert not watch.check(0)
    with torch.no_grad():  # worse weights: worse than the start twice in a row ends the loop
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    assert not watch.check(5) and watch.check(10)
    watch.settle()  # the final weights are worse than the start: back to the best (the start)
    assert all(torch.equal(start[k], v) for k, v in net.state_dict().items())
    report = watch.report()
    assert report["kept"] == "step 0" and len(report["held_out_loss"]) == 3
    # final weights not worse than the start (by the tolerance) are kept, even if a check between
    # scored better
    watch2 = HeldOut(net, fields, f2f._masked_l1, rng, steps=50, patch=32, crops=4)
    watch2.history = [(0, 1.0), (5, 0.5), (10, 1.004)]  # within the 0.5 % tolerance
    watch2.best_state = {k: torch.zeros_like(v) for k, v in start.items()}
    watch2.settle()
    assert watch2.kept == "final" and all(torch.equal(start[k], v)
                                          for k, v in net.state_dict().items())


def _frames(noisy):
    class Frames:  # what Fusion reads of the planes: the inputs, (H, W, 1)
        n_frames, n_depth, hw, c = len(noisy), 1, noisy.shape[1:], 1

        def __getitem__(self, i):
            return noisy[i][..., None]

    return Frames()


def test_temporal_fusion_averages_aligned_frames_and_leaves_out_what_does_not_match(caplog):
    from napari_ssl_restore.engine import video as V

    rng = np.random.default_rng(0)
    clean = moving_scene(6, 64, "cells", seed=2)  # sub-pixel drift and a slow turn
    clean[3, 20:36, 20:36] += 0.5  # a flash in frame 3 only: nothing to average it with
    restored = (clean + 0.02 * rng.standard_normal(clean.shape)).astype(np.float32)
    noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32)
    fusion = V.Fusion(_frames(noisy), torch.device("cpu"), 2)
    out = {}
    for i in range(6):
        ready = fusion.push(i, restored[i][..., None])
        assert [j for j, _ in ready] == list(range(len(out), len(out) + len(ready)))  # in order
        out.update(ready)
        assert len(out) == (6 if i == 5 else max(0, i - 1))  # two frames late, then all
    fused = np.stack([out[i][..., 0] for i in range(6)])
    inner = (slice(None), slice(8, -8), slice(8, -8))
    err_restored = np.mean((restored - clean)[inner] ** 2)
    err_fused = np.mean((fused - clean)[inner] ** 2)
    assert err_fused < 0.4 * err_restored  # five aligned frames: ideally a fifth
    # the flash stays in its frame, and leaves no ghost in the neighbours
    sq = (slice(24, 32), slice(24, 32))
    assert abs(fused[3][sq].mean() - clean[3][sq].mean()) < 0.02
    assert abs(fused[2][sq].mean() - clean[2][sq].mean()) < 0.02
    assert abs(fused[4][sq].mean() - clean[4][sq].mean()) < 0.02
    assert fusion.report()["fusion_radius"] == 2
    # radius 0: frames pass through as restored
    off = V.Fusion(_frames(noisy), torch.device("cpu"), 0)
    assert np.array_equal(off.push(1, restored[1][..., None])[0][1], restored[1][..., None])
    assert off.flush() == []
    # frames that would not fit in memory shrink the radius, and the log says so
    from napari_ssl_restore.engine import fusion as FU

    FU.FUSE_BYTES, saved = 3 * 64 * 64 * 5 * 4, FU.FUSE_BYTES
    try:
        with caplog.at_level(logging.WARNING):
            assert V.Fusion(_frames(noisy), torch.device("cpu"), 2).radius == 1
    finally:
        FU.FUSE_BYTES = saved
    assert "instead of 2" in caplog.text


def test_dncnn_fuses_a_time_lapse_when_asked_and_says_frames_are_then_linked():
    from napari_ssl_restore.methods import dncnn

    clean = moving_scene(5, 48, "cells", seed=1)
    noisy = add_noise(clean, sigma=25 / 255, seed=2)
    plain = restore(noisy, "dncnn", axes="TYX", full_output=True)
    fused = restore(noisy, "dncnn", axes="TYX", fusion_radius=2, full_output=True)
    assert plain["provenance"]["fusion_radius"] == 0 and fused["provenance"]["fusion_radius"] == 2
    assert psnr(clean, fused["image"]) > psnr(clean, plain["image"]) + 0.5
    still = restore(noisy[0], "dncnn", axes="YX", fusion_radius=2, full_output=True)
    assert still["provenance"]["fusion_radius"] == 0  # nothing to fuse with
    with pytest.raises(ValueError, match="set axes to TYX"):  # a movie taken for a Z stack
        restore(noisy, "dncnn", axes="ZYX", fusion_radius=2)
    assert dncnn.SPEC.links(dncnn.Params(fusion_radius=2)) and not dncnn.SPEC.links(dncnn.Params())


def test_frame2frame_offline_pairs_both_neighbours_and_stops_early(video):
    prov = restore(video["image"], "frame2frame", axes="TYX", mode="offline", epochs=4,
                   patch_size=32, batch_size=2, full_output=True)["provenance"]
    assert prov["pairs"] == 4  # 3 frames: 0-1, 1-0, 1-2, 2-1
    assert prov["held_out_loss"][0][0] == 0 and prov["held_out_loss"][-1][0] == prov["steps"]
    # fine-tuning that can only harm (a huge learning rate) ends on the starting model
    ruined = restore(video["image"], "frame2frame", axes="TYX", mode="offline", epochs=2,
                     learning_rate=0.5, patch_size=32, batch_size=2, fusion_radius=0,
                     full_output=True)
    assert ruined["provenance"]["kept"] == "step 0"
    np.testing.assert_allclose(ruined["image"], restore(video["image"], "dncnn", axes="TYX"),
                               atol=1e-5)


def test_frame2frame_tzyx_and_rgb_video():
    clean = moving_scene(3, 32, "cells")
    tz = np.stack([clean, clean[:, ::-1]], axis=1) + 0.05  # T, Z, Y, X
    out = restore(tz, "frame2frame", axes="TZYX", mode="online", **FAST["frame2frame"])
    assert out.shape == tz.shape
    rgb = np.repeat(clean[..., None], 3, axis=-1)
    out = restore(rgb, "restore-from-restored", axes="TYXC", mode="offline",
                  **FAST["restore-from-restored"])
    assert out.shape == rgb.shape


def test_video_methods_need_frames():
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match="needs a T axis"):
        restore(img, "frame2frame", axes="YX")
    with pytest.raises(ValueError, match="at least 2 frames"):
        restore(img[None], "frame2frame", axes="TYX")
    with pytest.raises(ValueError, match="mode"):
        restore(img[None], "frame2frame", axes="TYX", mode="sometimes")


@pytest.mark.parametrize("method", VIDEO_METHODS)
def test_online_stop_keeps_frames_done_and_says_so(method):
    video = noisy_video(n_frames=4, size=32, sigma=0.1, seed=1)["image"]
    steps = []

    def should_stop():  # while fine-tuning on the third frame
        return bool(steps) and steps[-1].message.startswith("frame 3/4:")

    out = restore(video, method, axes="TYX", mode="online", progress=steps.append,
                  should_stop=should_stop, full_output=True, **FAST[method])
    prov = out["provenance"]
    assert prov["stopped"] and prov["planes_done"] == 2
    done = prov["planes_done"]
    np.testing.assert_allclose(out["image"][done:], video[done:], atol=1e-5)
    assert not np.allclose(out["image"][:done], video[:done], atol=1e-3)


def test_offline_stop_during_fine_tuning_still_restores_every_frame():
    video = noisy_video(n_frames=3, size=32, sigma=0.1, seed=2)["image"]
    steps = []
    out = restore(video, "restore-from-restored", axes="TYX", mode="offline", epochs=50,
                  patch_size=32, batch_size=1, progress=steps.append,
                  should_stop=lambda: "fine-tuning" in steps[-1].message, full_output=True)
    prov = out["provenance"]
    assert prov["stopped"] and prov["planes_done"] == 3 and prov["steps"] < 150
    assert not np.allclose(out["image"], video, atol=1e-3)
    # progress keeps moving while the frames are restored after the Stop, and ends complete
    assert steps[-1].step == steps[-1].total and "stopped" in steps[-1].message


def test_stop_while_refreshing_round_two_keeps_the_first_round():
    video = noisy_video(n_frames=3, size=32, sigma=0.1, seed=2)["image"]
    steps = []

    def should_stop():  # in round 2's pseudo-clean pass
        return steps[-1].message.startswith("round 2/2: pseudo-clean")

    out = restore(video, "restore-from-restored", axes="TYX", mode="offline", epochs=1, rounds=2,
                  patch_size=32, batch_size=1, progress=steps.append, should_stop=should_stop,
                  full_output=True)
    prov = out["provenance"]
    assert prov["stopped"] and prov["steps"] == 3 and prov["planes_done"] == 3


def test_same_seed_same_result(video):
    a = restore(video["image"], "frame2frame", axes="TYX", mode="offline", seed=4,
                **FAST["frame2frame"])
    b = restore(video["image"], "frame2frame", axes="TYX", mode="offline", seed=4,
                **FAST["frame2frame"])
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_training_script_smoke(tmp_path):
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "..", "scripts", "train_denoiser.py")
    out = tmp_path / "m.pt"
    res = subprocess.run([sys.executable, script, "--steps", "2", "--batch-size", "2",
                          "--synthetic", "1", "--depth", "3", "--features", "8", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "held-out PSNR" in res.stdout
    ckpt = models.load_checkpoint(out)
    assert ckpt["architecture"] == "dncnn"
    assert ckpt["provenance"]["held_out"] == ["camera", "coins", "moon", "cell"]
    assert ckpt["provenance"]["recipe"]["steps"] == 2
    assert set(ckpt["provenance"]["held_out_psnr"]) == {"15", "25", "50", "pg20", "pg100"}

    # --install ships a checkpoint: copy into the package and a manifest entry that verifies it;
    # the models shipped before stay listed (loadable by name)
    mod = _training_script()
    mod.WEIGHTS = str(tmp_path / "pkg")
    os.makedirs(tmp_path / "pkg")
    (tmp_path / "pkg" / "manifest.json").write_text(json.dumps({"earlier": {"file": "e.pt"}}))
    digest = mod.install(str(out), "a-test-model")
    manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert set(manifest) == {"earlier", "a-test-model"}
    entry = manifest["a-test-model"]
    assert entry["file"] == "a_test_model.pt"
    assert entry["sha256"] == digest == models.sha256_file(tmp_path / "pkg" / "a_test_model.pt")
    assert entry["held_out_psnr"] == ckpt["provenance"]["held_out_psnr"]
    assert entry["recipe"]["steps"] == 2 and entry["config"]["depth"] == 3
    assert mod.install(str(out), "a-test-model") == digest  # the same weights again: fine
    (tmp_path / "pkg" / "manifest.json").write_text(json.dumps(
        {**manifest, models.SHIPPED_DENOISER: {"file": "d.pt"}}))  # the default ships, as here
    with pytest.raises(SystemExit):  # no --out: it would train onto the shipped default's file
        mod.main(["--steps", "1"])
    other = tmp_path / "other.pt"
    ckpt["provenance"]["recipe"]["seed"] = 99  # other bytes under a shipped name: refused
    models.save_model(ckpt, other)
    with pytest.raises(SystemExit, match="already shipped with other weights"):
        mod.install(str(other), "a-test-model")


def test_training_resumes_bit_for_bit(tmp_path):
    """3 steps, a session end, --resume for the other 5 == 8 steps straight (CPU); the held-out
    log and a resume with other settings refused."""
    import torch

    mod = _training_script()
    tiny = ["--steps", "8", "--batch-size", "2", "--patch", "16", "--synthetic", "1", "--depth",
            "3", "--features", "8", "--threads", str(torch.get_num_threads())]
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    assert mod.main(tiny + ["--out", str(b)]) == 0
    assert mod.main(tiny + ["--out", str(a), "--session-steps", "3", "--eval-every", "8"]) == 0
    assert not a.exists() and (tmp_path / "a.state.pt").exists()  # paused: no model yet
    with pytest.raises(SystemExit, match="other settings.*sigma_max"):
        mod.main(tiny + ["--out", str(a), "--resume", "--sigma-max", "30"])
    assert mod.main(tiny + ["--out", str(a), "--resume", "--eval-every", "8"]) == 0
    ca, cb = models.load_checkpoint(a), models.load_checkpoint(b)
    assert all(torch.equal(ca["state_dict"][k], cb["state_dict"][k]) for k in cb["state_dict"])
    log = ca["provenance"]["held_out_log"]
    assert [e["step"] for e in log] == [8] and log[0]["held_out_psnr"] == ca["provenance"][
        "held_out_psnr"]  # the log's last entry is the final weights' score


def test_noise_aware_denoiser_is_given_the_measured_noise_map(tmp_path):
    """The FFDNet-style network reads one more input channel, the noise std at each pixel (the
    variance model on the smoothed image); the methods measure the model on the image and the
    wrapper makes the map, channel by channel; its residual is on the image channel only."""
    import torch

    from napari_ssl_restore.engine.video import wrap_denoiser
    from napari_ssl_restore.nets.unet import UNet
    from napari_ssl_restore.physics.noise import noise_std_map

    flat = torch.full((2, 1, 16, 16), 0.25)
    a = np.array([0.0, 0.01], np.float32).reshape(2, 1, 1, 1)
    b = np.array([0.04, 0.0001], np.float32).reshape(2, 1, 1, 1)
    std = noise_std_map(flat, a, b)
    torch.testing.assert_close(std[0], torch.full((1, 16, 16), 0.2))  # Gaussian: sqrt(b)
    torch.testing.assert_close(std[1], torch.full((1, 16, 16), float(np.sqrt(0.0026))))
    torch.manual_seed(0)
    net = UNet(1, 1, 8, 2, residual=True, noise_map=True).eval()
    assert net.config["noise_map"] and net.head[0][0].in_channels == 2
    x = torch.rand(1, 2, 16, 16)  # two channels, each with its own noise model
    per_channel = np.array([[0.02, 0.001], [0.0, 0.01]])
    with torch.no_grad():
        got = wrap_denoiser(net, 2, per_channel)(x)
        for k, (ak, bk) in enumerate(per_channel):
            xk = x[:, k:k + 1]
            expected = net(torch.cat([xk, noise_std_map(xk, ak, bk)], 1))
            torch.testing.assert_close(got[:, k:k + 1], expected)
        torch.nn.init.zeros_(net.tail.weight), torch.nn.init.zeros_(net.tail.bias)
        torch.testing.assert_close(net(torch.cat([x[:, :1], x[:, :1]], 1)), x[:, :1])
    path = tmp_path / "aware.pt"  # no noise model in the file: it is measured on each image
    models.save_model(models.checkpoint(net, architecture="unet", normalization={},
                                        provenance={}), path)
    rng = np.random.default_rng(0)
    clean = np.clip(0.2 + 0.6 * np.sin(np.linspace(0, 6, 96))[:, None] ** 2 * np.ones(96), 0, 1)
    noisy = (rng.poisson(clean * 30) / 30 + 0.01 * rng.standard_normal(clean.shape)).astype(
        np.float32)
    out = restore(noisy, "dncnn", model=str(path), full_output=True)
    fit = out["provenance"]["noise_model"]
    assert fit["noise"] == "auto" and fit["a"][0] > 0  # photon noise measured
    np.testing.assert_allclose(out["image"], noisy, atol=1e-4)  # the net predicts no noise
    gauss = restore(noisy, "dncnn", model=str(path), noise="gaussian", full_output=True)
    assert gauss["provenance"]["noise_model"]["a"] == [0.0]


def _training_script(name: str = "train_denoiser"):
    import importlib.util

    script = os.path.join(os.path.dirname(__file__), "..", "scripts", name + ".py")
    spec = importlib.util.spec_from_file_location(name, script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_training_sources_are_offline_images_in_range():
    from napari_ssl_restore.data import dead_leaves, microscopy_field

    for make in (dead_leaves, microscopy_field):
        a, b = make(64, seed=1), make(64, seed=2)
        assert a.shape == (64, 64) and a.dtype == np.float32
        assert 0 <= a.min() and a.max() <= 1 and np.isfinite(a).all()
        np.testing.assert_array_equal(a, make(64, seed=1))
        assert not np.array_equal(a, b)
    leaves = dead_leaves(128, seed=3)
    assert len(np.unique(np.round(leaves, 3))) > 50 and leaves.std() > 0.1  # many leaves
    images, names = _training_script().package_images(np.random.default_rng(0))
    assert len(images) >= 3 and not any("camera" in n for n in names)  # held out stays out
    assert all(im.ndim == 2 and 0 <= im.min() and im.max() <= 1 for im in images)


def test_photon_noise_patches_are_signal_dependent(monkeypatch):
    import torch

    mod = _training_script()
    clean = np.concatenate([np.full((8, 1, 32, 32), 0.1, np.float32),
                            np.full((8, 1, 32, 32), 0.9, np.float32)])
    # no Poisson-Gaussian patches: exactly the Gaussian recipe's draws (the shipped model's)
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    sigma = ref.uniform(0, 55 / 255, (16, 1, 1, 1)).astype(np.float32)
    expected = clean + sigma * ref.standard_normal(clean.shape).astype(np.float32)
    np.testing.assert_array_equal(mod.noisy_batch(clean, rng, 55.0), expected)
    # all Poisson-Gaussian at 100 photons, no read noise: variance = intensity / 100
    monkeypatch.setattr(mod, "PG_PHOTONS", (100.0, 100.0))
    monkeypatch.setattr(mod, "PG_READ", 0.0)
    noisy = mod.noisy_batch(clean, np.random.default_rng(6), 55.0, pg_fraction=1.0)
    assert np.var(noisy[:8] - clean[:8]) == pytest.approx(0.001, rel=0.15)
    assert np.var(noisy[8:] - clean[8:]) == pytest.approx(0.009, rel=0.15)
    # the same distributions drawn by torch (--noise-on-device), here on the CPU
    gen = torch.Generator().manual_seed(7)
    noisy = mod.noisy_batch_on_device(torch.from_numpy(clean), gen, 55.0, pg_fraction=1.0).numpy()
    assert np.var(noisy[:8] - clean[:8]) == pytest.approx(0.001, rel=0.15)
    assert np.var(noisy[8:] - clean[8:]) == pytest.approx(0.009, rel=0.15)
    noisy = mod.noisy_batch_on_device(torch.from_numpy(clean), gen, 55.0).numpy()
    per_patch = (noisy - clean).std(axis=(1, 2, 3))
    assert per_patch.max() < 0.23 and per_patch.std() > 0.02  # sigma uniform in [0, 55/255]


def test_loss_weights_even_out_the_noise_levels(tmp_path):
    """--loss-power weighs each patch's squared error by its noise variance (a·u + b over the patch)
    to the power -p/2: 1 at the reference level, more for quieter patches, bounded at zero noise;
    p = 0 is the plain mean; it needs the noise map; a state saved without it still resumes."""
    mod = _training_script()
    clean = np.full((4, 1, 8, 8), 0.5, np.float32)
    ref, floor = mod.WEIGHT_REFERENCE, mod.WEIGHT_FLOOR
    a = np.array([0, 0, 0, 0.02], np.float32).reshape(-1, 1, 1, 1)
    b = np.array([ref ** 2, (ref / 2) ** 2, 0.0, 0.0], np.float32).reshape(-1, 1, 1, 1)
    assert mod.loss_weights(clean, a, b, 0.0) is None
    w = mod.loss_weights(clean, a, b, 2.0)
    assert w[0] == pytest.approx(1.0)
    assert w[1] == pytest.approx((ref ** 2 + floor ** 2) / ((ref / 2) ** 2 + floor ** 2))
    assert w[2] == pytest.approx((ref ** 2 + floor ** 2) / floor ** 2)  # bounded at zero noise
    assert w[3] == pytest.approx((ref ** 2 + floor ** 2) / (0.01 + floor ** 2))  # photon: a·u
    assert mod.loss_weights(clean, a, b, 1.0) == pytest.approx(np.sqrt(w))
    with pytest.raises(SystemExit):
        mod.main(["--steps", "1", "--loss-power", "2", "--out", str(tmp_path / "x.pt")])
    # a state saved before --loss-power existed resumes with the plain mean
    args = mod.parser().parse_args(["--steps", "4", "--out", str(tmp_path / "y.pt")])
    recipe = {k: v for k, v in vars(args).items() if k not in mod.SESSION_ARGS}
    mod.check_resumable(args, {"recipe": {k: v for k, v in recipe.items() if k != "loss_power"}})
    with pytest.raises(SystemExit, match="loss_power"):
        mod.check_resumable(args, {"recipe": {**recipe, "loss_power": 2.0}})


def test_candidate_launcher_reads_sizes_and_refuses_others():
    mod = _training_script("train_candidates")
    assert mod.parse_candidate("unet:32x4") == ("unet", 32, 4)
    assert [mod.parse_candidate(c)[0] for c in mod.CANDIDATES] == ["dncnn", "dncnn", "unet",
                                                                   "unet-res"]
    for bad in ("unet32x4", "resnet:32x4", "dncnn:32", "dncnn:0x12"):
        with pytest.raises(SystemExit, match="candidate"):
            mod.parse_candidate(bad)


def test_training_script_fine_tunes_from_a_checkpoint(tmp_path, monkeypatch):
    mod = _training_script()
    monkeypatch.setattr(mod, "held_out_psnr", lambda net, device: {"25": 0.0})  # smoke-tested
    out = tmp_path / "ft.pt"
    assert mod.main(["--init", os.path.join(models.WEIGHTS_DIR, "dncnn_blind_gray.pt"),
                     "--steps", "1", "--batch-size", "2", "--synthetic", "0", "--fields", "1",
                     "--dead-leaves", "1", "--pg-fraction", "0.5", "--lr", "1e-5",
                     "--noise-on-device", "--out", str(out)]) == 0
    prov = models.load_checkpoint(out)["provenance"]
    shipped = models.shipped_manifest()["dncnn-blind-gray"]
    assert prov["recipe"]["init_sha256"] == shipped["sha256"]
    assert prov["recipe"]["init_recipe"]["steps"] == shipped["recipe"]["steps"]
    assert prov["recipe"]["depth"] == 12 and prov["recipe"]["pg_fraction"] == 0.5
    assert prov["recipe"]["noise_on_device"]
    assert "1 dead-leaves images" in prov["train_images"]


def test_training_script_trains_a_unet_and_scores_it_on_odd_sizes(tmp_path, monkeypatch):
    mod = _training_script()
    # the held-out images have sizes a U-Net cannot halve: scoring pads (a 37×45 stand-in, quick)
    monkeypatch.setattr(mod, "held_out_psnr", lambda net, device: {
        "shape kept": float(mod._denoise(net, np.zeros((37, 45)), device).shape == (37, 45))})
    out = tmp_path / "unet.pt"
    assert mod.main(["--arch", "unet", "--features", "8", "--depth", "2", "--steps", "1",
                     "--batch-size", "2", "--synthetic", "0", "--out", str(out)]) == 0
    ckpt = models.load_checkpoint(out)
    assert ckpt["architecture"] == "unet" and ckpt["provenance"]["recipe"]["arch"] == "unet"
    assert ckpt["provenance"]["held_out_psnr"] == {"shape kept": 1.0}
    video = noisy_video(n_frames=2, size=30, seed=1)["image"]  # 30 is not a multiple of 4
    assert restore(video, "dncnn", axes="TYX", model=str(out)).shape == video.shape


def test_learning_rate_schedule_is_flat_then_cosine():
    mod = _training_script()
    lrs = [mod.learning_rate(s, 1000) for s in range(1, 1001)]
    assert lrs[0] == lrs[mod.WARM_STEPS - 1] == 1e-3
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] == pytest.approx(1e-5, rel=0.05)
