"""GPU check: every torch method on CUDA (or the best device), with timings, in one short run.

Run on a GPU machine:  python benchmarks/gpu_check.py [--device cuda] [--quick] [--no-speed]
Prints the device, then per method: that the run used the device, seconds per DIP iteration / N2N
step / video frame at CPU-vs-GPU comparable sizes, and peak GPU memory; then a speed table: DIP
ms/iteration at 256²/512²/1024² with the achieved TFLOP/s (counted by torch.utils.flop_counter)
next to the device's peak (--peak-tflops), plane-iterations/s for a 32-plane 512² stack fitted in
batches, the device TV-L1 flow against scikit-image's, and Frame2Frame / Restore-from-Restored
s/frame at 512². Exits non-zero when a method silently fell back to the CPU. Sized to finish in a
few minutes on one GPU.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def main() -> int:
    import torch

    from napari_ssl_restore import restore
    from napari_ssl_restore.data import noisy_cells, noisy_pair

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer iterations")
    ap.add_argument("--model", default="", help="video methods start from this saved model")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed table")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the device's dense bf16 peak, for the utilisation column (H100/H200 SXM: "
                         "989)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA available: {cuda}"
          + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    size, iters, steps = (128, 100, 50) if args.quick else (512, 300, 200)
    failures = 0

    def timed(label, fn, count, unit):
        nonlocal failures
        if cuda:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        used = out["provenance"].get("device", "?")
        mem = f", peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else ""
        print(f"{label}: {dt:.1f} s, {dt / count * 1000:.1f} ms/{unit} on {used}{mem}")
        if args.device.startswith("cuda") and cuda and not str(used).startswith("cuda"):
            failures += 1
            print(f"  !! {label} did not run on CUDA")

    noisy = noisy_cells(size=size, sigma=0.1)["image"]
    for task in ("denoise", "sr", "deconv"):
        timed(f"dip {task} {size}^2", lambda task=task: restore(
            noisy if task != "sr" else noisy[: size // 4, : size // 4], "dip", task=task,
            max_iter=iters, early_stop=False, device=args.device, full_output=True,
            sr_factor=4), iters, "iter")
    for mp in (True, False):
        timed(f"dip denoise mixed_precision={mp}", lambda mp=mp: restore(
            noisy, "dip", max_iter=iters, early_stop=False, mixed_precision=mp,
            device=args.device, full_output=True), iters, "iter")
    pair = noisy_pair(size=size)
    timed(f"noise2noise {steps} steps", lambda: restore(
        pair["image"], "noise2noise", target=pair["target"], steps=steps, device=args.device,
        full_output=True), steps, "step")
    timed("double-dip dehaze", lambda: restore(
        np.stack([noisy] * 3, -1), "double-dip", task="dehaze", max_iter=iters // 2,
        device=args.device, full_output=True), iters // 2, "iter")
    from napari_ssl_restore.data import noisy_video

    frames = 4 if args.quick else 10
    movie = noisy_video(n_frames=frames, size=size, sigma=0.02, poisson=20.0)["image"]
    extra = {"model": args.model} if args.model else {}
    timed(f"dncnn {frames} frames", lambda: restore(
        movie, "dncnn", axes="TYX", device=args.device, full_output=True, **extra), frames, "frame")
    for method in ("frame2frame", "restore-from-restored"):
        for mode in ("online", "offline"):
            def go(method=method, mode=mode):
                out = restore(movie, method, axes="TYX", mode=mode, device=args.device,
                              full_output=True, **extra)
                flow = out["provenance"].get("flow_seconds")
                if flow is not None:
                    print(f"  (optical flow on the CPU: {flow:.1f} s of it)")
                return out
            timed(f"{method} {mode} {frames} frames", go, frames, "frame")
    if not args.no_speed:
        failures += speed(args, cuda)
    return 1 if failures else 0


def dip_flops(size: int) -> float:
    """FLOPs of one DIP iteration (forward + backward) of the paper's skip net at ``size``²."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from napari_ssl_restore.nets.skip import SkipNet

    net = SkipNet(32, 1, 128, 5, 4).to("meta")
    z = torch.rand(1, 32, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        net(z).sum().backward()
    return float(counter.get_total_flops())


def speed(args, cuda: bool) -> int:
    """The speed table (markdown); returns the number of runs that did not use the device."""
    import torch

    from napari_ssl_restore import restore
    from napari_ssl_restore.data import noisy_cells, noisy_video
    from napari_ssl_restore.physics.flow import tvl1

    failures = 0
    iters = 50 if args.quick else 200

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def check(out, what):
        nonlocal failures
        used = str(out["provenance"].get("device", "?"))
        if args.device.startswith("cuda") and cuda and not used.startswith("cuda"):
            failures += 1
            print(f"  !! {what} did not run on CUDA ({used})")

    print(f"\n| speed ({torch.cuda.get_device_name(0) if cuda else args.device}) | time | "
          "achieved | note |\n|---|---|---|---|")
    for size in ((128, 256) if args.quick else (256, 512, 1024)):
        img = noisy_cells(size=size, sigma=0.1)["image"]
        for mp in (True, False):
            restore(img, "dip", max_iter=5, early_stop=False, device=args.device)  # warm-up
            sync()
            t0 = time.perf_counter()
            out = restore(img, "dip", max_iter=iters, early_stop=False, mixed_precision=mp,
                          device=args.device, full_output=True)
            sync()
            ms = (time.perf_counter() - t0) / iters * 1000
            check(out, f"dip {size}²")
            tflops = dip_flops(size) / (ms / 1000) / 1e12
            print(f"| DIP {size}², one plane, {'bf16' if mp else 'fp32'} | {ms:.1f} ms/iteration | "
                  f"{tflops:.1f} TFLOP/s ({100 * tflops / args.peak_tflops:.1f} % of "
                  f"{args.peak_tflops:.0f}) | |", flush=True)
    planes, size = (8, 128) if args.quick else (32, 512)
    clean = noisy_cells(size=size, sigma=0.0)["image"]
    rng = np.random.default_rng(0)
    stack = np.stack([clean + 0.1 * rng.standard_normal(clean.shape) for _ in range(planes)])
    stack = stack.astype(np.float32)
    for batch in (1, 0):
        n_iter = max(10, iters // 4)
        if batch == 1:  # one plane at a time: time two planes, report per plane
            sub = stack[:2]
        else:
            sub = stack
        sync()
        t0 = time.perf_counter()
        out = restore(sub, "dip", axes="ZYX", max_iter=n_iter, early_stop=False,
                      plane_batch=batch, device=args.device, full_output=True)
        sync()
        sec = time.perf_counter() - t0
        check(out, "dip stack")
        rate = len(sub) * n_iter / sec
        print(f"| DIP {len(sub)}-plane {size}² stack, plane_batch="
              f"{out['provenance']['plane_batch']} | {sec:.1f} s for {n_iter} iterations | "
              f"{rate:.1f} plane-iterations/s | 3000 iterations of {planes} planes ≈ "
              f"{planes * 3000 / rate / 60:.1f} min |", flush=True)
    size = 128 if args.quick else 512
    movie = noisy_video(n_frames=4 if args.quick else 10, size=size, sigma=0.02,
                        poisson=20.0)["image"]
    a = torch.from_numpy(movie[:-1].astype(np.float32) / max(float(movie.max()), 1e-6))
    b = torch.from_numpy(movie[1:].astype(np.float32) / max(float(movie.max()), 1e-6))
    from skimage.registration import optical_flow_tvl1

    t0 = time.perf_counter()
    optical_flow_tvl1(a[0].numpy(), b[0].numpy())
    sk = time.perf_counter() - t0
    dev = torch.device(args.device if cuda or not args.device.startswith("cuda") else "cpu")
    tvl1(a[:1].to(dev), b[:1].to(dev))  # warm-up
    for k in (1, len(a)):
        sync()
        t0 = time.perf_counter()
        tvl1(a[:k].to(dev), b[:k].to(dev))
        sync()
        sec = (time.perf_counter() - t0) / k
        print(f"| TV-L1 flow {size}², {k} pair(s) batched, {dev} | {sec:.3f} s/pair | | "
              f"scikit-image (CPU): {sk:.2f} s/pair |", flush=True)
    for method in ("frame2frame", "restore-from-restored"):
        for mode in ("online", "offline"):
            sync()
            t0 = time.perf_counter()
            out = restore(movie, method, axes="TYX", mode=mode, device=args.device,
                          full_output=True)
            sync()
            sec = (time.perf_counter() - t0) / len(movie)
            check(out, method)
            flow = out["provenance"].get("flow_seconds")
            note = f"of which flow {flow / len(movie):.3f} s/frame" if flow is not None else ""
            print(f"| {method} {mode}, {len(movie)} frames {size}² | {sec:.3f} s/frame | | "
                  f"{note} |", flush=True)
    return failures


if __name__ == "__main__":
    sys.exit(main())
