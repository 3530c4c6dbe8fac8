"""GPU check: every torch method on CUDA (or the best device), with timings, in one short run.

Run on a GPU machine:  python benchmarks/gpu_check.py [--device cuda] [--quick]
Prints the device, then per method: that the run used the device, seconds per DIP iteration / N2N
step / video frame at CPU-vs-GPU comparable sizes, and peak GPU memory. Exits non-zero when a method silently
fell back to the CPU. Sized to finish in a few minutes on one GPU.
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
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
