"""Double-DIP against naive baselines: separation, segmentation, dehazing.

Run:  python benchmarks/bench_double_dip.py [--size 64] [--channels 32] [--tasks dehaze]
                                           [--dehaze-params t_prior_weight=0]
                                           [--figure docs/double_dip.png]

- separate: two bundled images (camera, moon) mixed 50/50 into one image, then into two
  bleed-through mixtures (A + 0.4 B, 0.3 A + B; clean and with Gaussian noise σ 0.05). PSNR of each
  recovered layer against the true one after the best gain and offset (which blind separation
  cannot know), best assignment; vs the mixtures themselves and FastICA (if scikit-learn is
  installed: ``pip install scikit-learn``). Double-DIP gives its generators' layers and the data
  unmixed linearly with its learned matrix.
- segment: a texture (grass) inside a disc over another texture (gravel), crops at their native
  scale, matched in mean and standard deviation so intensities overlap; IoU of the mask vs Otsu
  thresholding, and given three scribbles (a stroke inside the disc, two along the borders) vs
  scikit-image's random walker.
- dehaze: the motorcycle hazed with its real depth (1/8 size), and the synthetic hazy fluorescence
  frame; PSNR/SSIM vs this project's DCP. The Double-DIP dehaze defaults were chosen on these two;
  a thinner haze over the motorcycle (β 1.2) and another fluorescence field (seed 3) are held out.
Reduced generator size (``--channels``), iterations (``--iters``) and small images so it runs on a
2-core CPU in minutes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from skimage import data, filters, transform
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.metrics import structural_similarity as ssim

from napari_ssl_restore import restore
from napari_ssl_restore.data import fluorescence_timelapse, hazy_scene


def gray(img, size):
    img = img.astype(np.float32)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    img = transform.resize(img, (size, size), anti_aliasing=True)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--iters", type=int, default=1000,
                    help="iterations per task (the defaults are 2000/3000/4000; fewer on a CPU)")
    ap.add_argument("--tasks", default="separate,segment,dehaze")
    ap.add_argument("--dehaze-params", default="", help="extra Double-DIP dehaze settings, "
                                                        "e.g. t_prior_weight=0,learn_airlight="
                                                        "False")
    ap.add_argument("--figure", type=Path, help="write a PNG with one row per case shown")
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    extra = {k: v == "True" if v in ("True", "False") else float(v)
             for k, v in (kv.split("=") for kv in args.dehaze_params.split(",") if kv)}
    net = {"channels": args.channels, "device": "cpu", "max_iter": args.iters}
    n = args.size
    print(f"{n}x{n} images, generators with {args.channels} channels, {args.iters} iterations, "
          "CPU (2 cores)\n")

    rows: list[list[tuple]] = []  # the figure: (title, image[, (vmin, vmax)]) panels per row
    if "separate" in tasks:
        separate(net, n, rows)
    if "segment" in tasks:
        segment(net, n, rows)
    if "dehaze" in tasks:
        dehaze(net, n, extra, rows)
    if args.figure:
        figure(rows, args.figure)


def figure(rows, path):
    """One row per case of ``(title, image[, (vmin, vmax)])`` panels; grey panels without limits
    are scaled to their own range."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(len(r) for r in rows)
    fig, axs = plt.subplots(len(rows), cols, figsize=(2.4 * cols, 2.6 * len(rows)), squeeze=False)
    for ax_row, row in zip(axs, rows, strict=False):
        for ax in ax_row:
            ax.axis("off")
        for ax, (title, img, *limits) in zip(ax_row, row, strict=False):
            if img.ndim == 3:
                ax.imshow(img)
            else:
                lo, hi = limits[0] if limits else (None, None)
                ax.imshow(img, cmap="gray", interpolation="nearest", vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"figure: {path}")


def affine_psnr(ref, est):
    """PSNR after the best gain and offset: blind separation cannot know a layer's scale/offset."""
    x = np.stack([est.ravel(), np.ones(est.size)], 1).astype(np.float64)
    fit = x @ np.linalg.lstsq(x, ref.ravel().astype(np.float64), rcond=None)[0]
    return psnr(ref.astype(np.float64), fit.reshape(ref.shape), data_range=1)


def best_pair(a, b, e1, e2):
    """Layer PSNRs (affine-fitted) under the better of the two assignments."""
    straight = (affine_psnr(a, e1), affine_psnr(b, e2))
    swapped = (affine_psnr(a, e2), affine_psnr(b, e1))
    return straight if sum(straight) >= sum(swapped) else swapped


def separate(net, n, rows):
    """camera + moon: one 50/50 mixture, then two bleed-through mixtures, without and with noise."""
    a, b = gray(data.camera(), n), gray(data.moon(), n)
    print("| separate (camera + moon) | estimate | layer A PSNR | layer B PSNR | seconds |")
    print("|---|---|---|---|---|")

    def row(case, name, pair, sec=None):
        print(f"| {case} | {name} | {pair[0]:.2f} | {pair[1]:.2f} | "
              f"{'-' if sec is None else f'{sec:.0f}'} |", flush=True)

    mix = 0.5 * a + 0.5 * b
    row("one image, 50/50", "the mixture", best_pair(a, b, mix, mix))
    t0 = time.perf_counter()
    out = restore(mix, "double-dip", task="separate", full_output=True, **net)
    row("one image, 50/50", "Double-DIP", best_pair(a, b, out["layer1"], out["layer2"]),
        time.perf_counter() - t0)

    rng = np.random.default_rng(1)
    cross = []
    for sigma in (0.0, 0.05):
        case = "A + 0.4 B and 0.3 A + B" + (f", noise σ {sigma}" if sigma else ", no noise")
        m1 = (a + 0.4 * b + sigma * rng.standard_normal(a.shape)).astype(np.float32)
        m2 = (0.3 * a + b + sigma * rng.standard_normal(a.shape)).astype(np.float32)
        row(case, "each mixture as its layer", best_pair(a, b, m1, m2))
        try:
            from sklearn.decomposition import FastICA
        except ImportError:
            print(f"| {case} | FastICA | scikit-learn not installed | | |")
        else:
            t0 = time.perf_counter()
            src = FastICA(2, whiten="unit-variance", random_state=0).fit_transform(
                np.stack([m1.ravel(), m2.ravel()], 1))
            row(case, "FastICA (scikit-learn)", best_pair(a, b, *(src.T.reshape(2, n, n))),
                time.perf_counter() - t0)
        t0 = time.perf_counter()
        out = restore(m1, "double-dip", task="separate", second=m2, full_output=True, **net)
        row(case, "Double-DIP, two mixtures (`layer1`/`layer2`)",
            best_pair(a, b, out["layer1"], out["layer2"]),
            time.perf_counter() - t0)
        row(case, "the same, its matrix unmixing the data (`unmixed1`/`unmixed2`)",
            best_pair(a, b, out["unmixed1"], out["unmixed2"]))
        if sigma:
            # as output (layer 1 against A), not the best assignment, so the titles hold
            pa, pb = affine_psnr(a, out["layer1"]), affine_psnr(b, out["layer2"])
            ua, ub = affine_psnr(a, out["unmixed1"]), affine_psnr(b, out["unmixed2"])
            rows.append([(f"mixture 1 (σ {sigma})", m1), ("mixture 2", m2),
                         (f"Double-DIP layer1 (A {pa:.1f} dB)", out["layer1"]),
                         (f"Double-DIP layer2 (B {pb:.1f} dB)", out["layer2"]),
                         (f"unmixed1 (A {ua:.1f} dB)", out["unmixed1"]),
                         (f"unmixed2 (B {ub:.1f} dB)", out["unmixed2"])])
        mix = np.array(out["provenance"]["mixing"])
        cross.append(f"{case}: {mix[0, 1] * mix[1, 0] / (mix[0, 0] * mix[1, 1]):.3f}")
    print("\nlearned bleed-through A01·A10 / (A00·A11) (true 0.12): " + "; ".join(cross) + "\n")


def segment(net, n, rows):
    """A grass disc on gravel matched in mean and std; mask IoU vs Otsu, and with scribbles vs the
    random walker given the same scribbles."""
    from skimage.segmentation import random_walker

    def crop(img):  # native scale: resized to 64 px, both textures blur into the same noise
        o = min(100, img.shape[0] - n, img.shape[1] - n)
        img = img[o:o + n, o:o + n].astype(np.float32)
        return (img - img.min()) / (img.max() - img.min())

    fg, bg = crop(data.grass()), crop(data.gravel())
    bg = (bg - bg.mean()) / bg.std() * fg.std() + fg.mean()
    yy, xx = np.mgrid[:n, :n]
    cy, cx, r = n * 0.45, n * 0.55, n * 0.3
    truth = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
    comp = np.clip(np.where(truth, fg, bg), 0, 1).astype(np.float32)
    # scribbles a user might paint: a short stroke across the disc's middle (1 = foreground) and
    # two along the left and bottom borders (2 = background)
    hints = np.zeros((n, n), np.int32)
    hints[int(cy) - 1:int(cy) + 1, int(cx - r / 2):int(cx + r / 2)] = 1
    hints[n // 8:n - n // 8, 1:3] = 2
    hints[n - 3:n - 1, n // 8:n - n // 8] = 2
    otsu = comp > filters.threshold_otsu(comp)
    print("| segment (grass disc on gravel, matched intensities) | IoU | seconds |")
    print("|---|---|---|")
    print(f"| Otsu | {max(iou(otsu, truth), iou(~otsu, truth)):.3f} | - |")
    t0 = time.perf_counter()
    labels = restore(comp, "double-dip", task="segment", **net).astype(bool)
    sec = time.perf_counter() - t0
    free = max(iou(labels, truth), iou(~labels, truth))
    print(f"| Double-DIP (no hints) | {free:.3f} | {sec:.0f} |", flush=True)
    t0 = time.perf_counter()
    rw = random_walker(comp, hints, beta=130) == 1  # scikit-image's default beta
    print(f"| random walker (scikit-image, default β 130), scribbles | {iou(rw, truth):.3f} | "
          f"{time.perf_counter() - t0:.1f} |")
    betas = (1, 10, 30, 500, 2000, 10000, 100000)
    tuned = max((iou(random_walker(comp, hints, beta=b) == 1, truth), b) for b in betas)
    print(f"| random walker, β tuned on the true mask (best of {', '.join(map(str, betas))}: "
          f"{tuned[1]}) | {tuned[0]:.3f} | - |")
    t0 = time.perf_counter()
    hinted = restore(comp, "double-dip", task="segment", hints=hints, **net).astype(bool)
    print(f"| Double-DIP, the same scribbles | {iou(hinted, truth):.3f} | "
          f"{time.perf_counter() - t0:.0f} |\n", flush=True)
    shown = np.repeat(comp[..., None], 3, -1)
    shown[hints == 1], shown[hints == 2] = (1, 0.2, 0.2), (0.2, 0.5, 1)
    rows.append([("texture disc on texture", comp), ("true mask", truth),
                 (f"Otsu, IoU {max(iou(otsu, truth), iou(~otsu, truth)):.2f}", otsu),
                 (f"Double-DIP, no hints, {free:.2f}", labels),
                 ("scribbles (red fg, blue bg)", shown),
                 (f"random walker {iou(rw, truth):.2f}", rw),
                 (f"Double-DIP, scribbles {iou(hinted, truth):.2f}", hinted)])


def dehaze(net, n, extra, rows):
    """The motorcycle hazed with its real depth and a hazy fluorescence frame, vs this DCP."""
    print("| dehaze | hazy | DCP (ours) | Double-DIP | Double-DIP seconds |")
    print("|---|---|---|---|---|")
    scenes = []
    for label, beta, seed in (("", 2.0, 0), (" (held out)", 1.2, 3)):
        s = hazy_scene(beta=beta)
        scenes.append((f"motorcycle, real depth, β {beta}{label}", s["image"][::8, ::8],
                       s["clean"][::8, ::8], 255))
        f = fluorescence_timelapse(n_frames=1, size=n, seed=seed)
        fclean = f["clean"][0] * 3000 + 100  # the haze- and noise-free frame, in the input units
        scenes.append((f"hazy fluorescence frame, seed {seed}{label}", f["image"][0], fclean,
                       float(fclean.max())))
    for name, img, ref, rng in scenes:
        kw = {"patch_size": 7}
        dcp_out = restore(img, "dcp", guided_radius=15, **kw)
        t0 = time.perf_counter()
        dd = restore(img, "double-dip", task="dehaze", guided_radius=15, **kw, **net, **extra)
        sec = time.perf_counter() - t0
        ch = -1 if img.ndim == 3 else None
        r = ref.astype(np.float64)

        def db(x):
            return psnr(r, x.astype(np.float64), data_range=rng)

        def q(x):
            x = x.astype(np.float64)
            return f"{db(x):.2f} / {ssim(r, x, data_range=rng, channel_axis=ch):.3f}"

        print(f"| {name} | {q(img)} | {q(dcp_out)} | {q(dd)} | {sec:.0f} |", flush=True)
        if "held out" in name:
            def unit(x):  # one display range for the row: the clean image's
                return np.clip(x.astype(np.float32) / rng, 0, 1)

            rows.append([(name.split(",")[0] + ", held out", unit(img), (0, 1)),
                         ("clean", unit(ref), (0, 1)),
                         (f"DCP {db(dcp_out):.2f} dB", unit(dcp_out), (0, 1)),
                         (f"Double-DIP {db(dd):.2f} dB", unit(dd), (0, 1))])


if __name__ == "__main__":
    main()
