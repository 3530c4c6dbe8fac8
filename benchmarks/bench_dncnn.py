"""The shipped blind DnCNN on images it never trained on, against BM3D and non-local means.

Run:  python benchmarks/bench_dncnn.py [--sigmas 15,25,50] [--crop 256] [--model other.pt]
                                      [--no-bm3d] [--ensemble]

Images: scikit-image's ``camera``, ``coins``, ``moon`` and ``cell`` (held out by
``scripts/train_denoiser.py``), centre crops of ``--crop`` pixels (0 = whole image), additive white
Gaussian noise of σ in 8-bit units. BM3D (``bm3d`` package) and non-local means
(scikit-image, ``h = 0.8σ``, ``fast_mode``) are given the true σ; DnCNN is blind. The images are
passed as float in [0, 1] without clipping, through ``restore(..., "dncnn")`` like a user would.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from skimage import data
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.restoration import denoise_nl_means

from napari_ssl_restore import restore

HELD_OUT = ("camera", "coins", "moon", "cell")


def _bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    import bm3d

    return bm3d.bm3d(noisy, sigma_psd=sigma)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sigmas", default="15,25,50")
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--model", default="", help="a saved .pt instead of the shipped model")
    ap.add_argument("--no-bm3d", action="store_true", help="DnCNN and NL-means only")
    ap.add_argument("--ensemble", action="store_true",
                    help="also DnCNN with the 8-fold self-ensemble (ensemble=True)")
    args = ap.parse_args(argv)
    extra = {"model": args.model} if args.model else {}
    rng = np.random.default_rng(0)
    table = {}
    labels = ["DnCNN (shipped, blind)", "DnCNN self-ensemble", "BM3D (true σ)",
              "NL-means (true σ)"]
    skip = {"DnCNN self-ensemble"} if not args.ensemble else set()
    skip |= {"BM3D (true σ)"} if args.no_bm3d else set()
    times = {k: [] for k in labels if k not in skip}
    for s in [int(v) for v in args.sigmas.split(",")]:
        for name in HELD_OUT:
            img = getattr(data, name)().astype(np.float32) / 255
            if args.crop:
                h, w = img.shape
                c = min(args.crop, h, w)
                img = img[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
            noisy = img + s / 255 * rng.standard_normal(img.shape).astype(np.float32)
            runs = {
                "DnCNN (shipped, blind)": lambda: restore(noisy, "dncnn", axes="YX", **extra),
                "DnCNN self-ensemble": lambda: restore(noisy, "dncnn", axes="YX", ensemble=True,
                                                       **extra),
                "BM3D (true σ)": lambda: _bm3d(noisy, s / 255),
                "NL-means (true σ)": lambda: denoise_nl_means(noisy, h=0.8 * s / 255,
                                                              sigma=s / 255, fast_mode=True,
                                                              patch_size=5, patch_distance=6),
            }
            table.setdefault((s, "noisy"), []).append(psnr(img, np.clip(noisy, 0, 1),
                                                          data_range=1))
            runs = {k: v for k, v in runs.items() if k in times}
            for label, fn in runs.items():
                t0 = time.perf_counter()
                out = fn()
                times[label].append(time.perf_counter() - t0)
                table.setdefault((s, label), []).append(psnr(img, np.clip(out, 0, 1),
                                                            data_range=1))
            print(f"σ={s} {name}: " + ", ".join(f"{k} {table[(s, k)][-1]:.2f}"
                                                for k in ["noisy", *runs]), flush=True)
    labels = ["noisy", *times]
    print("\n| σ (8-bit) | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for s in [int(v) for v in args.sigmas.split(",")]:
        print(f"| {s} | " + " | ".join(f"{np.mean(table[(s, k)]):.2f}" for k in labels) + " |")
    print("| seconds per image | – | " + " | ".join(f"{np.mean(times[k]):.2f}" for k in times)
          + " |")


if __name__ == "__main__":
    main()
