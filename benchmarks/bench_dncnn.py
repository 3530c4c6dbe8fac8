"""The shipped denoiser on images it never trained on, against BM3D and non-local means.

Run:  python benchmarks/bench_dncnn.py [--sigmas 15,25,50] [--crop 256] [--model other.pt]
                                      [--no-bm3d] [--ensemble] [--photons 20,100 [--read 0.01]]
                                      [--images fresh|edges] [--seeds 0,1] [--sizes]

Images: scikit-image's ``camera``, ``coins``, ``moon`` and ``cell`` (held out by
``scripts/train_denoiser.py``), centre crops of ``--crop`` pixels (0 = whole image), additive white
Gaussian noise of σ in 8-bit units. ``--images fresh``: a second held-out set, never used to choose
anything (the photographs above chose the noise-aware architecture), mostly of kinds the shipped
models never trained on: two synthetic microscopy fields (``data.microscopy_field`` seeds 1 and 2;
training used none), a dead-leaves image (``data.dead_leaves`` seed 1; the default trained on
seeds 1000-1023 of that kind, the models before it on none), the
Shepp–Logan phantom, and scikit-image's ``microaneurysms`` crop (102²; training has another
retinal photograph, ``retina``). ``--images edges``: a third (:data:`EDGES`).
``--seeds``: noise draws per image (the table: mean over all).
BM3D (``bm3d`` package) and non-local means
(scikit-image, ``h = 0.8σ``, ``fast_mode``) are given the true σ; the denoiser is blind, or
(noise-aware) measures the noise model on each image itself (``noise="auto"``). The images are
passed as float in [0, 1] without clipping, through ``restore(..., "dncnn")`` like a user would.

``--photons``: Poisson-Gaussian noise instead (``photons`` at full scale, Gaussian read noise
``--read``), the shipped model applied directly and after the generalised Anscombe transform (GAT,
Mäkitalo & Foi 2013, with the true gain and read noise), against BM3D after the GAT (σ = 1 there),
the classical baseline for photon noise.

``--sizes``: the candidate network sizes of the video-quality issue — parameters and the seconds to
denoise one 512² frame on this machine's CPU (median of 5 after a warm-up), and the shipped
denoiser through ``restore`` as a user calls it (the noise fit included; it must stay ≤ 0.5 s on a
laptop CPU).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.restoration import denoise_nl_means

from napari_ssl_restore import restore

HELD_OUT = ("camera", "coins", "moon", "cell")
FRESH = ("field:1", "field:2", "leaves:1", "phantom", "microaneurysms")
EDGES = ("horse", "logo", "checkerboard", "icon")
"""A third held-out set, fixed before the dead-leaves fine-tune of the default was measured (that
fine-tune was aimed at the second set's sharp-edged images, so those no longer judge it): images
with pixel-sharp edges the training never had — scikit-image's ``horse`` silhouette (binary), its
``logo`` over white, the synthetic ``checkerboard`` — and a rendered icon with smooth shading
between its edges (matplotlib's ``Minduka_Present_Blue_Pack.png`` sample, luminance over white,
128²)."""


def _luminance_over_white(rgba: np.ndarray) -> np.ndarray:
    """An RGBA image in [0, 1] composited over white, as luminance (Rec. 709 weights)."""
    over_white = rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
    return over_white @ np.array([0.2125, 0.7154, 0.0721], np.float32)


def held_out_image(name: str, side: int) -> np.ndarray:
    """A held-out image in [0, 1] (float32, ``side``² centre crop): a scikit-image name, or
    ``field:SEED`` / ``leaves:SEED`` (synthetic microscopy field / dead leaves) or ``phantom``."""
    from napari_ssl_restore.data import dead_leaves, microscopy_field

    kind, _, seed = name.partition(":")
    if kind == "field":
        return microscopy_field(max(side, 64), seed=int(seed)).astype(np.float32)
    if kind == "leaves":
        return dead_leaves(max(side, 64), seed=int(seed)).astype(np.float32)
    if kind == "phantom":
        img = data.shepp_logan_phantom()
    elif kind == "horse":
        img = data.horse().astype(np.float32)
    elif kind == "logo":
        img = _luminance_over_white(data.logo().astype(np.float32) / 255.0)
    elif kind == "icon":
        from matplotlib import cbook, image

        img = _luminance_over_white(np.asarray(
            image.imread(cbook.get_sample_data("Minduka_Present_Blue_Pack.png")), np.float32))
    else:
        img = getattr(data, name)() / 255.0
    return _crop(np.asarray(img, np.float32), side)


def model_label(model: str) -> str:
    """The table's name for the denoiser run: the shipped one, a shipped name, or a file; a
    noise-aware one measures the noise on each image itself (BM3D is given the true σ)."""
    from napari_ssl_restore.core.models import SHIPPED_DENOISER, model_named

    aware = model_named(model)["config"].get("noise_map")
    name = os.path.basename(model) if model else f"{SHIPPED_DENOISER} (shipped)"
    return f"{name}, {'noise measured' if aware else 'blind'}"


def _bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return bm3d.bm3d(noisy, sigma_psd=sigma)


def gat(z, gain: float, read: float):
    """Generalised Anscombe transform of ``z = gain * Poisson(x / gain) + N(0, read²)``: noise of
    unit variance (Mäkitalo & Foi, IEEE TIP 2013)."""
    return 2.0 / gain * np.sqrt(np.maximum(gain * z + 0.375 * gain ** 2 + read ** 2, 0.0))


def gat_inverse(d, gain: float, read: float):
    """The closed-form approximation of the exact unbiased inverse of :func:`gat` (Mäkitalo & Foi
    2011, 2013)."""
    d = np.maximum(d, 0.8)  # the approximation's domain (its terms in 1/d blow up near 0)
    r = np.sqrt(1.5)
    inv = 0.25 * d ** 2 + 0.25 * r / d - 1.375 / d ** 2 + 0.625 * r / d ** 3 - 0.125
    return gain * np.maximum(inv - (read / gain) ** 2, 0.0)


def poisson_gaussian(args, extra: dict) -> None:
    """Still images with Poisson-Gaussian noise: DnCNN directly, DnCNN and BM3D after the GAT."""
    from napari_ssl_restore.data import add_noise

    direct, wrapped = model_label(extra.get("model", "")), "the same after GAT"
    table, times = {}, {k: [] for k in (direct, wrapped, "BM3D after GAT (σ=1)")}
    for photons in [float(v) for v in args.photons.split(",")]:
        gain = 1.0 / photons
        for k, (name, seed) in enumerate(_draws(args)):
            img = held_out_image(name, args.crop)
            noisy = add_noise(img, args.read, poisson=photons,
                              seed=k if seed == 0 else 1000 * seed + k).astype(np.float32)
            stable = gat(noisy, gain, args.read)
            top = float(stable.max())  # the model expects [0, 1]: σ becomes 1 / top there

            def after_gat():
                out = restore((stable / top).astype(np.float32), "dncnn", axes="YX", **extra)
                return gat_inverse(out * top, gain, args.read)

            runs = {direct: lambda: restore(noisy, "dncnn", axes="YX", **extra),
                    wrapped: after_gat,
                    "BM3D after GAT (σ=1)": lambda: gat_inverse(_bm3d(stable, 1.0), gain,
                                                                args.read)}
            _score(img, noisy, runs, f"{photons:g} photons, {name} (noise {seed})", photons, table,
                   times, name)
    _print_table(f"photons (read noise {args.read:g})",
                 [float(v) for v in args.photons.split(",")], table, times)


def _draws(args) -> list[tuple[str, int]]:
    """``(image, noise seed)`` pairs of the run: every image of the set for every seed."""
    images = {"fresh": FRESH, "edges": EDGES}.get(args.images, HELD_OUT)
    return [(name, seed) for seed in (int(v) for v in args.seeds.split(",")) for name in images]


def _score(img, noisy, runs: dict, what: str, key, table: dict, times: dict, image: str = ""
           ) -> None:
    """Run every ``label -> fn`` of ``runs``, recording its PSNR under ``(key, label)`` in
    ``table`` (the noisy input's under ``(key, "noisy")``), and under ``(key, label, image)``
    too, and its seconds in ``times``."""
    table.setdefault((key, "noisy"), []).append(psnr(img, np.clip(noisy, 0, 1), data_range=1))
    for label, fn in runs.items():
        t0 = time.perf_counter()
        out = fn()
        times[label].append(time.perf_counter() - t0)
        value = psnr(img, np.clip(out, 0, 1), data_range=1)
        table.setdefault((key, label), []).append(value)
        table.setdefault((key, label, image), []).append(value)
    print(f"{what}: " + ", ".join(f"{k} {table[(key, k)][-1]:.2f}" for k in ["noisy", *runs]),
          flush=True)


def _print_table(heading: str, keys: list, table: dict, times: dict) -> None:
    """Mean PSNR per key and method, and mean seconds per method, as a Markdown table."""
    labels = ["noisy", *times]
    print(f"\n| {heading} | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for key in keys:
        print(f"| {key:g} | " + " | ".join(f"{np.mean(table[(key, k)]):.2f}" for k in labels)
              + " |")
    print("| seconds per image | – | " + " | ".join(f"{np.mean(times[k]):.2f}" for k in times)
          + " |")
    first, *others = list(times)
    images = sorted({k[2] for k in table if len(k) == 3}, key=str)
    if others and len(images) > 1:  # per image, the first method against each other one
        print(f"\n{first} minus each other method, per image (mean over the noise draws):\n")
        print(f"| {heading} | image | " + " | ".join(others) + " |\n" + "|---" * (len(others) + 2)
              + "|")
        for key in keys:
            for name in images:
                print(f"| {key:g} | {name} | " + " | ".join(
                    f"{np.mean(table[(key, first, name)]) - np.mean(table[(key, k, name)]):+.2f}"
                    for k in others) + " |")


SIZES = {"DnCNN 12×32 (dncnn-blind-gray)": ("dncnn", {"features": 32, "depth": 12}),
         "DnCNN 17×64 (paper's DnCNN-S)": ("dncnn", {"features": 64, "depth": 17}),
         "U-Net 32, 4 levels": ("unet", {"features": 32, "depth": 4}),
         "U-Net 48, 5 levels (Noise2Noise's)": ("unet", {"features": 48, "depth": 5}),
         "U-Net 32, 4 levels, residual, noise map": ("unet", {"features": 32, "depth": 4,
                                                               "residual": True,
                                                               "noise_map": True})}


def sizes(side: int = 512, repeats: int = 5, model: str = "") -> None:
    """Parameters and CPU seconds per ``side``² frame of each candidate in :data:`SIZES`."""
    import torch

    from napari_ssl_restore.nets.dncnn import DnCNN
    from napari_ssl_restore.nets.unet import UNet

    print(f"\n| network | parameters | s per {side}² frame (CPU, {torch.get_num_threads()} "
          "threads) |\n|---|---|---|")
    for label, (kind, cfg) in SIZES.items():
        net = (DnCNN if kind == "dncnn" else UNet)(1, 1, **cfg).eval()
        x = torch.rand(1, 1 + int(cfg.get("noise_map", False)), side, side)
        times = []
        with torch.no_grad():
            net(x)
            for _ in range(repeats):
                t0 = time.perf_counter()
                net(x)
                times.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in net.parameters())
        print(f"| {label} | {params / 1e3:.0f} k | {np.median(times):.3f} |", flush=True)
    # what a user waits for: the shipped denoiser through restore(), noise fit and scaling included
    img = np.random.default_rng(0).random((side, side)).astype(np.float32)
    times = []
    for k in range(repeats + 1):  # the first one warms up
        t0 = time.perf_counter()
        restore(img, "dncnn", axes="YX", device="cpu", model=model)
        if k:
            times.append(time.perf_counter() - t0)
    print(f"| {model or 'the shipped denoiser'} through restore(..., 'dncnn') | – | "
          f"{np.median(times):.3f} |")


def _crop(img, side: int):
    """The centre ``side``² crop (the whole image for 0)."""
    if not side:
        return img
    h, w = img.shape
    c = min(side, h, w)
    return img[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigmas", default="15,25,50")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--model", default="",
                    help="a saved .pt or a shipped model's name (dncnn-blind-gray: the first "
                         "release's) instead of the shipped denoiser")
    ap.add_argument("--no-bm3d", action="store_true", help="DnCNN and NL-means only")
    ap.add_argument("--ensemble", action="store_true",
                    help="also DnCNN with the 8-fold self-ensemble (ensemble=True)")
    ap.add_argument("--photons", default="",
                    help="comma-separated photon counts at full scale: Poisson-Gaussian noise "
                         "against BM3D after the Anscombe transform instead")
    ap.add_argument("--read", type=float, default=0.01, help="read noise std with --photons")
    ap.add_argument("--images", choices=("photos", "fresh", "edges"), default="photos",
                    help="photos: camera, coins, moon, cell; fresh: a second held-out set of other "
                         "kinds (synthetic microscopy fields, dead leaves, phantom, retina); "
                         "edges: a third (horse, logo, checkerboard, a rendered icon)")
    ap.add_argument("--seeds", default="0", help="noise draws per image (comma-separated)")
    ap.add_argument("--sizes", action="store_true",
                    help="only time the candidate network sizes on a 512² frame")
    args = ap.parse_args(argv)
    if args.sizes:
        return sizes(model=args.model)
    extra = {"model": args.model} if args.model else {}
    if args.photons:
        return poisson_gaussian(args, extra)
    table = {}
    model = model_label(args.model)
    labels = [model, "self-ensemble", "BM3D (true σ)", "NL-means (true σ)"]
    skip = {"self-ensemble"} if not args.ensemble else set()
    skip |= {"BM3D (true σ)"} if args.no_bm3d else set()
    times = {k: [] for k in labels if k not in skip}
    rngs = {seed: np.random.default_rng(seed) for seed in (int(v) for v in args.seeds.split(","))}
    for s in [int(v) for v in args.sigmas.split(",")]:
        for name, seed in _draws(args):
            img = held_out_image(name, args.crop)
            noisy = img + s / 255 * rngs[seed].standard_normal(img.shape).astype(np.float32)
            runs = {
                model: lambda: restore(noisy, "dncnn", axes="YX", **extra),
                "self-ensemble": lambda: restore(noisy, "dncnn", axes="YX", ensemble=True,
                                                 **extra),
                "BM3D (true σ)": lambda: _bm3d(noisy, s / 255),
                "NL-means (true σ)": lambda: denoise_nl_means(noisy, h=0.8 * s / 255,
                                                              sigma=s / 255, fast_mode=True,
                                                              patch_size=5, patch_distance=6),
            }
            runs = {k: v for k, v in runs.items() if k in times}
            _score(img, noisy, runs, f"σ={s} {name} (noise {seed})", s, table, times, name)
    _print_table("σ (8-bit)", [int(v) for v in args.sigmas.split(",")], table, times)


if __name__ == "__main__":
    main()
