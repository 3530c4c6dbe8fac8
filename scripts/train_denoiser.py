#!/usr/bin/env python
"""Train the blind Gaussian denoiser that napari-ssl-restore ships (``dncnn``).

Reproducible (seeded NumPy and torch, single process) and offline: the training images are
scikit-image's bundled photographs and scans plus synthetic fluorescence fields made by
``napari_ssl_restore.data.cells``. ``camera``, ``coins``, ``moon`` and ``cell`` are **held out**
(never trained on) so the README can report PSNR on images the model has not seen.

Recipe: random 48×48 grayscale crops (colour images contribute their luminance and one random
channel), half at native resolution and half downscaled 1–2× (anti-aliased), flips and 90° rotations, intensity gain 0.6–1 with offset;
additive white Gaussian noise with σ drawn uniformly from [0, 55]/255 per patch (blind); loss: mean
squared error of the predicted noise residual; Adam (lr 1e-3, cosine decay to 1e-5).

    python scripts/train_denoiser.py                      # the shipped model (about 35 min on 2 CPU cores)
    python scripts/train_denoiser.py --steps 20 --out /tmp/m.pt   # a quick smoke run

Writes the checkpoint and updates ``weights/manifest.json`` (sha256, recipe, held-out PSNR) when the
output is the shipped path.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

HELD_OUT = ("camera", "coins", "moon", "cell")
TRAIN_IMAGES = ("astronaut", "brick", "chelsea", "clock", "coffee", "grass", "gravel",
                "hubble_deep_field", "immunohistochemistry", "page", "retina", "rocket", "text")
SHIPPED = os.path.join(os.path.dirname(__file__), "..", "src", "napari_ssl_restore", "weights",
                       "dncnn_blind_gray.pt")


def _gray_images(rng: np.random.Generator, n_synthetic: int) -> list[np.ndarray]:
    from skimage import color, data

    from napari_ssl_restore.data import cells

    out = []
    for name in TRAIN_IMAGES:
        img = np.asarray(getattr(data, name)(), dtype=np.float32) / 255.0
        if img.ndim == 3:
            out.append(color.rgb2gray(img[..., :3]).astype(np.float32))
            out.append(np.ascontiguousarray(img[..., int(rng.integers(3))]))
        else:
            out.append(img)
    left = data.stereo_motorcycle()[0]
    out.append(color.rgb2gray(left).astype(np.float32))
    for k in range(n_synthetic):  # seeds 1000+ so tests/benchmarks (small seeds) stay unseen
        out.append(cells(256, seed=1000 + k))
    return out


class Patches:
    def __init__(self, images, patch: int, rng: np.random.Generator):
        self.images, self.patch, self.rng = images, patch, rng
        weights = np.array([im.size for im in images], float)
        self.p = np.sqrt(weights) / np.sqrt(weights).sum()  # big images count, but not overwhelm

    def sample(self, n: int) -> np.ndarray:
        from skimage.transform import resize

        rng, p = self.rng, self.patch
        out = np.empty((n, 1, p, p), np.float32)
        for b in range(n):
            img = self.images[rng.choice(len(self.images), p=self.p)]
            s = 1.0 if rng.random() < 0.5 else rng.uniform(0.5, 1.0)  # half at native scale
            size = min(int(round(p / s)), *img.shape)
            y = rng.integers(0, img.shape[0] - size + 1)
            x = rng.integers(0, img.shape[1] - size + 1)
            crop = img[y:y + size, x:x + size]
            if size != p:
                crop = resize(crop, (p, p), order=1, anti_aliasing=True).astype(np.float32)
            crop = np.rot90(crop, int(rng.integers(4)))
            if rng.integers(2):
                crop = crop[:, ::-1]
            gain = rng.uniform(0.6, 1.0)
            out[b, 0] = crop * gain + rng.uniform(0, 1 - gain)
        return out


def held_out_psnr(net, sigmas=(15, 25, 50), seed: int = 123) -> dict[str, float]:
    """Mean PSNR over the held-out images at each σ (in 8-bit units)."""
    import torch
    from skimage import data
    from skimage.metrics import peak_signal_noise_ratio as psnr

    rng = np.random.default_rng(seed)
    images = [np.asarray(getattr(data, n)(), np.float32) / 255.0 for n in HELD_OUT]
    res = {}
    net.eval()
    for s in sigmas:
        vals = []
        for img in images:
            noisy = img + s / 255.0 * rng.standard_normal(img.shape).astype(np.float32)
            with torch.no_grad():
                den = net(torch.from_numpy(noisy)[None, None])[0, 0].numpy()
            vals.append(psnr(img, np.clip(den, 0, 1), data_range=1.0))
        res[str(s)] = float(np.mean(vals))
    return res


def _versions() -> dict[str, str]:
    """Versions that bit-identical reruns depend on (with the thread count and the CPU)."""
    import importlib.metadata as md

    out = {}
    for name in ("torch", "numpy", "scipy", "scikit-image", "pillow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--sigma-max", type=float, default=55.0, help="in 8-bit units")
    ap.add_argument("--synthetic", type=int, default=24, help="synthetic fluorescence fields")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=SHIPPED)
    args = ap.parse_args(argv)

    import torch

    from napari_ssl_restore.core.models import checkpoint, save_model, sha256_file
    from napari_ssl_restore.nets.dncnn import DnCNN

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    patches = Patches(_gray_images(rng, args.synthetic), args.patch, rng)
    net = DnCNN(1, 1, args.features, args.depth)
    lr0, lr1 = 1e-3, 1e-5
    opt = torch.optim.Adam(net.parameters(), lr=lr0)
    t0 = time.time()
    running = None
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * (step - 1) / args.steps))
        clean = torch.from_numpy(patches.sample(args.batch_size))
        sigma = torch.from_numpy(rng.uniform(0, args.sigma_max / 255.0, (args.batch_size, 1, 1, 1))
                                 .astype(np.float32))
        noise = sigma * torch.from_numpy(rng.standard_normal(clean.shape).astype(np.float32))
        loss = torch.mean((net(clean + noise) - clean) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}/{args.steps}  loss {running:.3e}  {time.time() - t0:.0f} s",
                  flush=True)
    seconds = time.time() - t0
    scores = held_out_psnr(net)
    print("held-out PSNR (dB) by sigma:", json.dumps(scores))
    recipe = {k: v for k, v in vars(args).items() if k != "out"}
    recipe["versions"] = _versions()
    ckpt = checkpoint(net, architecture="dncnn", normalization={"kind": "percentile", "low": 0.1,
                                                               "high": 99.9},
                      provenance={"method": "dncnn", "script": "scripts/train_denoiser.py",
                                  "recipe": recipe, "train_images": list(TRAIN_IMAGES)
                                  + ["stereo_motorcycle (left)", f"{args.synthetic} synthetic cells"],
                                  "held_out": list(HELD_OUT), "held_out_psnr": scores})
    ckpt["provenance"]["saved"] = "reproducible"  # keep the file identical across reruns
    path = save_model(ckpt, args.out)
    digest = sha256_file(path)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB) sha256 {digest}")
    if os.path.abspath(args.out) == os.path.abspath(SHIPPED):
        manifest = os.path.join(os.path.dirname(path), "manifest.json")
        entry = {"file": os.path.basename(path), "sha256": digest, "architecture": "dncnn",
                 "config": dict(net.config), "sigma_range_8bit": [0, args.sigma_max],
                 "recipe": recipe, "held_out": list(HELD_OUT), "held_out_psnr": scores,
                 "train_seconds_cpu": round(seconds)}
        with open(manifest, "w") as f:
            json.dump({"dncnn-blind-gray": entry}, f, indent=2)
            f.write("\n")
        print(f"updated {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
