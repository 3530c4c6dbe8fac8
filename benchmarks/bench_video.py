"""Video denoising: the shipped pretrained DnCNN alone, Frame2Frame and Restore-from-Restored
(online and offline) against per-frame BM3D.

Run:  python benchmarks/bench_video.py [--frames 10] [--size 128] [--videos camera,moon,cells]
                                       [--noise gaussian25,poisson,correlated] [--only ...]
                                       [--device cuda] [--model other.pt] [--no-bm3d]

Videos (offline): a crop drifting and turning slowly over scikit-image's ``camera``, ``moon`` (real
images the shipped denoiser never trained on) and over a synthetic fluorescence field
(``napari_ssl_restore.data.noisy_video``). Noise:

- ``gaussian25``: additive white Gaussian, σ = 25/255 (what the pretrained model was trained for);
- ``poisson``: Poisson-Gaussian, 20 photons at full scale + read noise σ = 0.02 (never seen);
- ``correlated``: Gaussian σ = 20/255 blurred by a 1-px Gaussian (spatially correlated, never seen).

BM3D (the ``bm3d`` package) gets the true σ for ``gaussian25`` and scikit-image's
``estimate_sigma`` otherwise (what a user has). Metrics: PSNR / SSIM against the clean frames
(mean over frames), and the temporal error ``tErr`` = RMS of ((out_t − out_{t−1}) − (clean_t −
clean_{t−1})): flicker and lag, lower is better.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.metrics import structural_similarity as ssim
from skimage.restoration import estimate_sigma

from napari_ssl_restore import restore
from napari_ssl_restore.data import add_noise, moving_scene

NOISE = {
    "gaussian25": {"sigma": 25 / 255},
    "poisson": {"sigma": 0.02, "poisson": 20.0},
    "correlated": {"sigma": 20 / 255, "correlation": 1.0},
}


METHODS = {
    "pretrained DnCNN": ("dncnn", {}),
    "pretrained DnCNN with fusion": ("dncnn", {"fusion_radius": 2}),
    "Frame2Frame online": ("frame2frame", {"mode": "online"}),
    "Frame2Frame offline": ("frame2frame", {"mode": "offline"}),
    "Frame2Frame offline without fusion": ("frame2frame", {"mode": "offline", "fusion_radius": 0}),
    "RfR online": ("restore-from-restored", {"mode": "online"}),
    "RfR offline": ("restore-from-restored", {"mode": "offline"}),
    "RfR offline without fusion": ("restore-from-restored", {"mode": "offline", "fusion_radius": 0}),
}
"""Frame2Frame and RfR with their default temporal fusion (``fusion_radius=2``) and offline
without it (the methods as published), and the pretrained DnCNN without and with the same fusion:
what fusion adds, and what fine-tuning adds with fusion and without."""


def bm3d_video(noisy: np.ndarray, sigma: float | None) -> np.ndarray:
    import bm3d

    out = np.empty_like(noisy)
    for t, frame in enumerate(noisy):
        s = sigma if sigma is not None else float(estimate_sigma(frame))
        out[t] = bm3d.bm3d(frame, sigma_psd=s)
    return out


def scores(clean: np.ndarray, out: np.ndarray) -> tuple[float, float, float]:
    out = np.clip(out, 0, 1)
    p = float(np.mean([psnr(c, o, data_range=1) for c, o in zip(clean, out, strict=False)]))
    s = float(np.mean([ssim(c, o, data_range=1) for c, o in zip(clean, out, strict=False)]))
    terr = float(np.sqrt(np.mean((np.diff(out, axis=0) - np.diff(clean, axis=0)) ** 2)))
    return p, s, terr


def save_figure(images: dict[str, np.ndarray], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(1, len(images), figsize=(2.6 * len(images), 3.0), squeeze=False)
    for ax, (label, img) in zip(axs[0], images.items(), strict=False):
        ax.imshow(np.clip(img, 0, 1), cmap="gray", vmin=0, vmax=1)
        ax.set_title(label.replace(" (", "\n("), fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--videos", default="camera,moon,cells")
    ap.add_argument("--noise", default="gaussian25,poisson,correlated")
    ap.add_argument("--only", default="", help="comma-separated method labels to run")
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="", help="starting model (a saved .pt) instead of the "
                                                "shipped one")
    ap.add_argument("--figure", default="", help="save the middle frame of every result of the "
                                                 "first video/noise here (PNG)")
    args = ap.parse_args(argv)
    shown: dict[str, np.ndarray] = {}

    only = [s.strip() for s in args.only.split(",") if s.strip()]
    rows = []
    for noise in args.noise.split(","):
        for video in args.videos.split(","):
            clean = moving_scene(args.frames, args.size, video, seed=0)
            noisy = add_noise(clean, **NOISE[noise], seed=1)
            base = scores(clean, noisy)
            rows.append((noise, video, "noisy input", *base, 0.0))
            first = not shown
            if first:
                mid = args.frames // 2
                shown.update({"clean": clean[mid], f"noisy ({base[0]:.2f} dB)": noisy[mid]})
            print(f"\n{noise} / {video}: noisy {base[0]:.2f} dB", flush=True)
            runs = dict(METHODS)
            if not args.no_bm3d:
                runs = {"BM3D per frame": None, **runs}
            for label, spec in runs.items():
                if only and label not in only:
                    continue
                t0 = time.perf_counter()
                flow = ""
                if spec is None:
                    out = bm3d_video(noisy, NOISE[noise]["sigma"] if noise == "gaussian25" else None)
                else:
                    extra = {"model": args.model} if args.model else {}
                    res = restore(noisy, spec[0], axes="TYX", device=args.device, seed=0,
                                  full_output=True, **spec[1], **extra)
                    out = res["image"]
                    if "flow_seconds" in res["provenance"]:
                        flow = f", of which optical flow {res['provenance']['flow_seconds']:.1f} s"
                sec = time.perf_counter() - t0
                p, s, terr = scores(clean, out)
                rows.append((noise, video, label, p, s, terr, sec))
                if first:
                    shown[f"{label} ({p:.2f} dB)"] = out[mid]
                print(f"  {label:22s} {p:6.2f} dB  SSIM {s:.3f}  tErr {terr:.4f}  {sec:7.1f} s "
                      f"({sec / args.frames:.2f} s/frame{flow})", flush=True)

    if args.figure:
        save_figure(shown, args.figure, f"{args.noise.split(',')[0]} noise, "
                                        f"{args.videos.split(',')[0]} video, middle frame")
    print("\n| noise | video | method | PSNR (dB) | SSIM | tErr | s/frame |")
    print("|---|---|---|---|---|---|---|")
    for noise, video, label, p, s, terr, sec in rows:
        print(f"| {noise} | {video} | {label} | {p:.2f} | {s:.3f} | {terr:.4f} | "
              f"{sec / args.frames:.2f} |")
    print("\nMean over videos:")
    print("| noise | method | PSNR (dB) | SSIM | tErr | s/frame |")
    print("|---|---|---|---|---|---|")
    keys = dict.fromkeys((r[0], r[2]) for r in rows)
    for noise, label in keys:
        sel = [r for r in rows if r[0] == noise and r[2] == label]
        m = np.mean([[r[3], r[4], r[5], r[6]] for r in sel], axis=0)
        print(f"| {noise} | {label} | {m[0]:.2f} | {m[1]:.3f} | {m[2]:.4f} | "
              f"{m[3] / args.frames:.2f} |")


if __name__ == "__main__":
    main()
