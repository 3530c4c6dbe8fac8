"""Deep Image Prior against the classical tool a user would otherwise run.

Run:  python benchmarks/bench_dip.py [--size 96] [--channels 64] [--only denoise,inpaint,sr,deconv]
      python benchmarks/bench_dip.py --only deconv-tuning  # the runs behind deconv's defaults
Needs the benchmark-only ``bm3d`` package for the BM3D baseline.

Tasks (each on images available offline): denoise at sigma 15/25/50 (of 255) vs BM3D and non-local
means; inpainting of 50 % random pixels and of scratches vs biharmonic inpainting; x4 super-resolution vs
bicubic; deconvolution at DIP's defaults (128² held-out crops, Gaussian PSF s=2, noise 0.01, two
noise draws) vs Richardson-Lucy (reflect-padded, at its best iteration count); a 4-plane stack
fitted one plane at a time, batched and warm-started; the seconds per plane of one training step,
one by one vs batched. For DIP the table also gives
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
    ap.add_argument("--only", default="denoise,inpaint,sr,deconv,stack,step",
                    help="comma-separated: denoise, inpaint, sr, deconv, deconv-tuning, stack, step")
    ap.add_argument("--seeds", default="0,1", help="noise draws for deconv (comma-separated)")
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
        deconv_held_out(args.seeds)
    if "deconv-tuning" in only:
        deconv_tuning()
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


def _unit(img) -> np.ndarray:
    img = img.astype(np.float32)
    return (img - img.min()) / (img.max() - img.min())


DECONV_HELD_OUT = {  # 128² crops never used to choose the deconvolution settings
    "Hubble deep field (red)": lambda: _unit(data.hubble_deep_field()[200:328, 300:428, 0]),
    "moon": lambda: _unit(data.moon()[250:378, 200:328]),
    "synthetic cells (seed 21)": lambda: cells(128, seed=21),
    "coins": lambda: _unit(data.coins()[100:228, 150:278]),
}
DECONV_TUNING = {  # the fields that chose precondition, channels and the stopping rule
    "synthetic cells (seed 11), PSF s=2, noise 0.01": (lambda: cells(128, seed=11), 2.0, 0.01),
    "skimage cell crop, PSF s=3, noise 0.005": (
        lambda: (data.cell()[200:328, 200:328] / 255.0).astype(np.float32), 3.0, 0.005),
}


def _blurred(clean, sigma_psf, noise, rng):
    import torch

    psf = gaussian_psf(sigma_psf)
    b = blur(torch.from_numpy(clean)[None, None], torch.from_numpy(psf))[0, 0].numpy()
    return np.clip(b + noise * rng.standard_normal(clean.shape), 0, None).astype(np.float32), psf


def deconv_held_out(seeds: str) -> None:
    """DIP deconvolution at its defaults against Richardson-Lucy at its best iteration count (an
    oracle, chosen with the clean image) on held-out 128² crops, Gaussian PSF s=2, noise 0.01."""
    from bench_physics_gan import richardson_lucy_reflect  # one RL baseline for the benchmarks

    print("\n| field (128², PSF s=2, noise 0.01) | seed | best RL (reflect) dB (iterations) | "
          "DIP at defaults dB | DIP − RL | DIP seconds | stopped at |\n|---|---|---|---|---|---|---|")
    gaps, times = [], []
    for name, make in DECONV_HELD_OUT.items():
        clean = make()
        for seed in (int(x) for x in seeds.split(",")):
            noisy, psf = _blurred(clean, 2.0, 0.01, np.random.default_rng(500 + seed))
            scores = {k: psnr(clean, np.clip(richardson_lucy_reflect(noisy, psf, k), 0, 1),
                              data_range=1) for k in (5, 10, 20, 30, 50, 80, 120, 200)}
            best = max(scores, key=scores.get)
            t0 = time.perf_counter()
            out = restore(noisy, "dip", task="deconv", psf=psf, device="cpu", seed=seed,
                          float_output=True, full_output=True)
            sec = time.perf_counter() - t0
            ours = psnr(clean, np.clip(out["image"], 0, 1), data_range=1)
            gaps.append(ours - scores[best])
            times.append(sec)
            print(f"| {name} | {seed} | {scores[best]:.2f} ({best}) | {ours:.2f} | "
                  f"{ours - scores[best]:+.2f} | {sec:.0f} | "
                  f"{out['provenance']['stop_iterations'][0]} |", flush=True)
    print(f"\nmean DIP − best RL {np.mean(gaps):+.2f} dB (worst {min(gaps):+.2f}); "
          f"{np.mean(times):.0f} s per crop on average (most {max(times):.0f})")


def deconv_tuning(iterations: int = 2000) -> None:
    """The runs that chose DIP deconvolution's defaults: PSNR of the averaged estimate and its
    residual over the noise variance every 100 iterations, per preconditioning weight, with early
    stopping off, on the two tuning fields (64 channels)."""
    import torch

    from napari_ssl_restore.physics.estimate import noise_fit

    for name, (make, sigma_psf, noise) in DECONV_TUNING.items():
        clean = make()
        noisy, psf = _blurred(clean, sigma_psf, noise, np.random.default_rng(1))
        tpsf = torch.from_numpy(psf)
        print(f"\n{name}: PSNR dB (residual / estimated noise variance) by iteration")
        for lam in (0.0, 0.01, 0.03, 0.1):
            job = prepare(noisy, "dip", axes="YX", device="cpu", seed=0, float_output=True,
                          task="deconv", psf=psf, max_iter=iterations, early_stop=False,
                          precondition=lam, preview_every=100)
            unit = job.scaling.forward(noisy)
            fitted = noise_fit([unit])
            level = float(np.mean(fitted["a"] * np.clip(unit, 0, None) + fitted["b"]))
            y = torch.from_numpy(unit)[None, None]
            row = []

            def progress(step, row=row, y=y, level=level, tpsf=tpsf, clean=clean, job=job):
                if step.preview is not None:
                    est = step.preview[..., 0]
                    res = float(((blur(torch.from_numpy(est)[None, None], tpsf) - y) ** 2).mean())
                    out = job.scaling.inverse(est, as_float=True)
                    row.append(f"{psnr(clean, np.clip(out, 0, 1), data_range=1):.2f} "
                               f"({res / level:.2f})")

            drive(execute(job), progress=progress)
            print(f"precondition {lam:g}: " + ", ".join(row), flush=True)


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
