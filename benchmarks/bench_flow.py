"""Optical flow: the device TV-L1 (torch, ``napari_ssl_restore.physics.flow``) against scikit-image's.

Run:  python benchmarks/bench_flow.py [--size 512] [--device cpu|cuda]

Accuracy: mean end-point error (px) against the true flow, 16 px from the borders, on synthetic
motions of scikit-image's ``camera`` at ``size``² (a sub-pixel shift, a 2° rotation, a shear, a 3 %
zoom: the moved image is resampled with cubic splines) and on a real stereo pair with measured
ground truth (scikit-image's ``stereo_motorcycle``: the flow is minus the disparity, pixels without a
valid disparity left out). Speed: seconds per pair, scikit-image on the CPU, ours pair by pair and
the four synthetic pairs batched, on ``--device``.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def epe(flow, truth, valid):
    return float(np.sqrt(((flow - truth) ** 2).sum(0))[valid].mean())


def main() -> None:
    import torch
    from skimage import color, data, registration, transform

    from napari_ssl_restore.physics.flow import tvl1

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    dev = torch.device(args.device)
    n = args.size
    ref = transform.resize(data.camera() / 255.0, (n, n), anti_aliasing=True).astype(np.float32)
    rr, cc = np.mgrid[0:n, 0:n].astype(np.float32)
    mid = (n - 1) / 2
    a = np.deg2rad(2.0)
    motions = {
        "shift (1.3, -0.7) px": np.stack([np.full_like(rr, 1.3), np.full_like(rr, -0.7)]),
        "rotation 2°": np.stack([(np.cos(a) - 1) * (rr - mid) + np.sin(a) * (cc - mid),
                                 -np.sin(a) * (rr - mid) + (np.cos(a) - 1) * (cc - mid)]),
        "shear 0.01": np.stack([np.zeros_like(rr), 0.01 * (rr - mid)]),
        "zoom 3 %": np.stack([0.03 * (rr - mid), 0.03 * (cc - mid)]),
    }
    pairs = []
    for name, t in motions.items():  # moving[x + t(x)] = ref[x], to first order
        moving = transform.warp(ref, np.stack([rr - t[0], cc - t[1]]), order=3, mode="edge")
        valid = np.zeros((n, n), bool)
        valid[16:-16, 16:-16] = True
        pairs.append((name, ref, moving.astype(np.float32), t, valid))
    try:
        left, right, disp = data.stereo_motorcycle()
        left, right = (color.rgb2gray(x).astype(np.float32) for x in (left, right))
        truth = np.stack([np.zeros_like(disp), -disp]).astype(np.float32)
        valid = np.isfinite(disp) & (disp > 0)
        valid[:16], valid[-16:], valid[:, :16], valid[:, -16:] = False, False, False, False
        truth[~np.stack([valid, valid])] = 0
        pairs.append((f"stereo_motorcycle {left.shape[0]}×{left.shape[1]} (real)", left, right,
                      truth, valid))
    except Exception as exc:  # noqa: BLE001 - the real pair is optional (fetched by scikit-image)
        print(f"(no real pair: {exc})")

    def ours(a, b):
        x = torch.from_numpy(np.stack(a)).to(dev)
        y = torch.from_numpy(np.stack(b)).to(dev)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        f = tvl1(x, y)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return f.cpu().numpy(), time.perf_counter() - t0

    ours([pairs[0][1]], [pairs[0][2]])  # warm-up
    print(f"TV-L1 defaults (λ 15, θ 0.3, 5 warps × 10 iterations); torch {torch.__version__} on "
          f"{dev}, {torch.get_num_threads()} threads\n")
    print("| motion | EPE scikit-image (px) | EPE ours (px) | ours / scikit-image | "
          "s/pair scikit-image (CPU) | s/pair ours |")
    print("|---|---|---|---|---|---|")
    for name, a, b, truth, valid in pairs:
        t0 = time.perf_counter()
        theirs = registration.optical_flow_tvl1(a, b)
        ts = time.perf_counter() - t0
        f, to = ours([a], [b])
        e1, e0 = epe(theirs, truth, valid), epe(f[0], truth, valid)
        print(f"| {name} | {e1:.3f} | {e0:.3f} | {e0 / e1:.2f} | {ts:.2f} | {to:.2f} |",
              flush=True)
    k = len(motions)
    _, tb = ours([p[1] for p in pairs[:k]], [p[2] for p in pairs[:k]])
    print(f"\n{k} synthetic pairs batched in one call: {tb / k:.2f} s/pair")


if __name__ == "__main__":
    main()
