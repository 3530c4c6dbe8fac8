"""Deep Image Prior against the classical tool a user would otherwise run.

Run:  python benchmarks/bench_dip.py [--size 96] [--channels 64] [--only denoise,inpaint,sr,deconv]
Needs the benchmark-only ``bm3d`` package for the BM3D baseline.

Tasks (each on images available offline): denoise at sigma 15/25/50 (of 255) vs BM3D and non-local
means; inpainting of 50 % random pixels and of scratches vs biharmonic inpainting; x4 super-resolution vs
bicubic; deconvolution of a Gaussian blur with noise vs Richardson-Lucy (reflect-padded, at its
best iteration count and at scikit-image's default); a 4-plane stack fitted one plane at a time,
batched and warm-started; the seconds per plane of one training step, one by one vs batched.
For DIP the table also gives
the iteration where early stopping stopped, the iteration where the (EMA) output's PSNR peaked and the
PSNR there -- measured every 25 iterations against the clean image, which DIP itself never sees.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from skimage import data, draw, restoration, transform
from skimage.metrics import peak_signal_noise_ratio as psnr
from skimage.metrics import structural_similarity as ssim

from napari_ssl_restore import restore
from napari_ssl_restore.api import execute, prepare
from napari_ssl_restore.core.progress import drive
from napari_ssl_restore.data import cells
from napari_ssl_restore.physics.operators import blur, downsample, gaussian_psf


def camera(size: int) -> np.ndarray:
    return transform.resize(data.camera() / 255.0, (size, size), anti_aliasing=True).astype(np.float32)


def q(clean, x):
    return psnr(clean, np.clip(x, 0, 1), data_range=1.0), ssim(clean, np.clip(x, 0, 1), data_range=1.0)


def run_dip(image, clean, **kw):
    """DIP with early stopping; also track the PSNR of every preview to find the peak."""
    kw.setdefault("preview_every", 25)
    job = prepare(image, "dip", axes="YX", device="cpu", seed=0, float_output=True, **kw)
    curve = []

    def progress(step):
        if step.preview is not None:
            est = job.scaling.inverse(step.preview[..., 0], as_float=True)
            if kw.get("task") == "inpaint":
                est = np.where(kw["mask"] != 0, est, image)
            curve.append((int(step.metrics["iteration"]), psnr(clean, np.clip(est, 0, 1), data_range=1)))

    t0 = time.perf_counter()
    out = drive(execute(job), progress=progress)
    seconds = time.perf_counter() - t0
    peak_it, peak = max(curve, key=lambda c: c[1]) if curve else (0, float("nan"))
    prov = out["provenance"]
    return out["image"], seconds, prov["stop_iterations"][0], prov["best_iterations"][0], peak_it, peak


def fmt(p_s):
    return f"{p_s[0]:.2f} / {p_s[1]:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--only", default="denoise,inpaint,sr,deconv,stack,step")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rng = np.random.default_rng(0)
    cam, cel = camera(args.size), cells(args.size)
    net = {"channels": args.channels}
    print(f"images {args.size}x{args.size}; DIP: {args.channels} channels, 5 scales, early stopping "
          "on; CPU (2 cores); PSNR dB / SSIM\n")
    print("| task | image | degraded | baseline | baseline PSNR/SSIM (s) | DIP PSNR/SSIM (s) "
          "| ES stop / best iter | peak iter, PSNR |")
    print("|---|---|---|---|---|---|---|---|")

    def row(task, name, degraded_q, base_name, base_q, base_s, dip):
        img, sec, stop, best, peak_it, peak = dip
        print(f"| {task} | {name} | {fmt(degraded_q)} | {base_name} | {fmt(base_q)} ({base_s:.1f}) | "
              f"{fmt(q(CLEAN[0], img))} ({sec:.0f}) | {stop} / {best} | {peak_it}, {peak:.2f} |",
              flush=True)

    CLEAN = [None]
    if "denoise" in only:
        import bm3d

        for clean, name, sigmas in ((cam, "camera", (15, 25, 50)), (cel, "cells", (25,))):
            for s in sigmas:
                CLEAN[0] = clean
                sigma = s / 255
                noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
                t0 = time.perf_counter()
                b = bm3d.bm3d(noisy, sigma_psd=sigma)
                tb = time.perf_counter() - t0
                t0 = time.perf_counter()
                nlm = restoration.denoise_nl_means(noisy, h=0.8 * sigma, sigma=sigma, fast_mode=True,
                                                   patch_size=5, patch_distance=6)
                tn = time.perf_counter() - t0
                dip = run_dip(noisy, clean, task="denoise", **net)
                row(f"denoise s={s}", name, q(clean, noisy), "BM3D", q(clean, b), tb, dip)
                print(f"| | | | NLM | {fmt(q(clean, nlm))} ({tn:.1f}) | | | |", flush=True)
    if "inpaint" in only:
        random_mask = rng.random(cam.shape) < 0.5
        scratch = np.zeros(cel.shape, bool)
        for _ in range(8):
            r0, c0, r1, c1 = rng.integers(0, args.size, 4)
            rr, cc = draw.line(r0, c0, r1, c1)
            scratch[rr, cc] = True
        from scipy.ndimage import binary_dilation

        scratch = binary_dilation(scratch, iterations=1)
        for clean, name, mask in ((cam, "camera, 50% random", random_mask),
                                  (cel, "cells, scratches", scratch)):
            CLEAN[0] = clean
            degraded = np.where(mask, 0, clean).astype(np.float32)
            t0 = time.perf_counter()
            bh = restoration.inpaint_biharmonic(degraded, mask)
            tb = time.perf_counter() - t0
            dip = run_dip(degraded, clean, task="inpaint", mask=mask, **net)
            row("inpaint", name, q(clean, degraded), "biharmonic", q(clean, bh), tb, dip)
    if "sr" in only:
        import torch

        CLEAN[0] = cam
        lr = downsample(torch.from_numpy(cam)[None, None], 4)[0, 0].numpy()
        t0 = time.perf_counter()
        bic = transform.resize(lr, cam.shape, order=3)
        tb = time.perf_counter() - t0
        near = transform.resize(lr, cam.shape, order=0)
        dip = run_dip(lr, cam, task="sr", sr_factor=4, **net)
        row("sr x4", "camera", q(cam, near), "bicubic", q(cam, bic), tb, dip)
    if "deconv" in only:
        import torch
        from bench_physics_gan import richardson_lucy_reflect  # one RL baseline for the benchmarks

        real = data.cell()[200:200 + args.size, 200:200 + args.size] / 255.0  # real microscopy
        for clean, name, sigma_psf, noise in ((cel, "cells", 2.0, 0.01),
                                              (real.astype(np.float32), "skimage cell (real)", 3.0,
                                               0.005)):
            CLEAN[0] = clean
            psf = gaussian_psf(sigma_psf)
            blurred = blur(torch.from_numpy(clean)[None, None], torch.from_numpy(psf))[0, 0].numpy()
            noisy = np.clip(blurred + noise * rng.standard_normal(clean.shape), 0, None)
            noisy = noisy.astype(np.float32)
            # Richardson-Lucy as a user runs it: reflect-padded (scikit-image pads with zeros, which
            # darkens the borders), at scikit-image's default count and at the best count (an
            # oracle: chosen with the clean image, which DIP never sees)
            counts = (5, 10, 20, 30, 50, 80, 120)
            scores = {k: q(clean, richardson_lucy_reflect(noisy, psf, k)) for k in counts}
            best = max(counts, key=lambda k: scores[k][0])
            t0 = time.perf_counter()
            richardson_lucy_reflect(noisy, psf, best)
            tb = time.perf_counter() - t0
            dip = run_dip(noisy, clean, task="deconv", psf=psf, **net)
            row(f"deconv (Gaussian PSF s={sigma_psf:g}, noise {noise:g})", name, q(clean, noisy),
                f"Richardson-Lucy (reflect, best {best} it.)", scores[best], tb, dip)
            print(f"| | | | Richardson-Lucy (reflect, 30 it., scikit-image's default) | "
                  f"{fmt(scores[30])} | | | |", flush=True)
    if "stack" in only:
        # a 4-plane stack (same field, fresh noise per plane): independent fits one plane after the
        # other (the default on a CPU), the same fits batched (4 networks in one step), and warm
        # start (each plane from the previous plane's network, a quarter of the iterations)
        clean = cells(64)
        stack = np.stack([clean + 25 / 255 * rng.standard_normal(clean.shape)
                          for _ in range(4)]).astype(np.float32)
        kw = dict(axes="ZYX", device="cpu", float_output=True, full_output=True, channels=32)
        print("\n| stack of 4 planes (64x64 cells, sigma 25, 32 channels) | seconds | s/plane | "
              "PSNR per plane | mean PSNR | iterations per plane |")
        print("|---|---|---|---|---|---|")
        for name, extra in (("independent, one at a time (plane_batch=1)", {"plane_batch": 1}),
                            ("independent, batched (plane_batch=4)", {"plane_batch": 4}),
                            ("warm start (warm_start=True)", {"warm_start": True})):
            t0 = time.perf_counter()
            res = restore(stack, "dip", **kw, **extra)
            sec = time.perf_counter() - t0
            ps = [q(clean, x)[0] for x in res["image"]]
            print(f"| {name} | {sec:.0f} | {sec / 4:.0f} | {', '.join(f'{p:.2f}' for p in ps)} | "
                  f"{np.mean(ps):.2f} | {res['provenance']['stop_iterations']} |", flush=True)

    if "step" in only:
        step_speed()


def step_speed() -> None:
    """Seconds per plane of one DIP training step: B networks fitted one by one vs batched."""
    import torch

    from napari_ssl_restore.nets.skip import SkipNet
    from napari_ssl_restore.nets.stack import StackedNets

    print("\n| step (forward + backward + Adam), B=4 planes | one by one, s/plane | batched, "
          "s/plane | batched / one by one |\n|---|---|---|---|")
    for channels, size in ((32, 64), (64, 128), (128, 128), (32, 256)):
        torch.manual_seed(0)
        nets = [SkipNet(32, 1, channels, 5, 4) for _ in range(4)]
        stacked = StackedNets(nets)
        z = torch.rand(4, 32, size, size) * 0.1
        y = torch.rand(4, 1, size, size)
        opts = [torch.optim.Adam(n.parameters(), lr=0.01) for n in nets]
        opt = torch.optim.Adam(stacked.parameters(), lr=0.01)

        def single():
            for k, (net, o) in enumerate(zip(nets, opts, strict=False)):
                o.zero_grad()
                ((net(z[k:k + 1]) - y[k:k + 1]) ** 2).mean().backward()
                o.step()

        def batched():
            opt.zero_grad()
            ((stacked(z) - y) ** 2).flatten(1).mean(1).sum().backward()
            opt.step()

        times = []
        for fn in (single, batched):
            fn()
            t0 = time.perf_counter()
            for _ in range(10):
                fn()
            times.append((time.perf_counter() - t0) / 40)
        print(f"| {channels} channels, {size}² | {times[0]:.3f} | {times[1]:.3f} | "
              f"{times[1] / times[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
