#!/usr/bin/env python
"""Train the blind Gaussian denoiser that napari-ssl-restore ships (``dncnn``).

Reproducible (seeded NumPy and torch, single process) and offline; it trains on the engine's loop
(:func:`napari_ssl_restore.engine.train.optimise`): the training images are
scikit-image's bundled photographs and scans plus synthetic fluorescence fields made by
``napari_ssl_restore.data.cells``. ``camera``, ``coins``, ``moon`` and ``cell`` are **held out**
(never trained on) so the benchmarks (docs/benchmarks/dncnn.md) report PSNR on unseen images.

Recipe: random 48×48 grayscale crops (colour images contribute their luminance and one random
channel), half at native resolution and half from an anti-aliased downscaled copy (1.2–2×), flips and
90° rotations, intensity gain 0.6–1 with offset; additive white Gaussian noise with σ drawn uniformly
from [0, 55]/255 per patch (blind); loss: mean squared error of the clean image (the network predicts
the noise residual); Adam, lr 1e-3 for 50 steps then cosine decay to 1e-5.

    python scripts/train_denoiser.py --steps 20 --out /tmp/m.pt       # a quick smoke run (CPU)
    python scripts/train_denoiser.py --device cuda --batch-size 128 --threads 8 --steps 12401 \
        --out dncnn.pt                       # the shipped model's recipe (4.5 min on one H200)
    python scripts/train_denoiser.py --install dncnn.pt --name NEW-NAME   # ship it (sha256 + manifest)

More data and noise as microscopes make it (the video-quality issue), all offline: ``--package-images``
(matplotlib's and PyWavelets' sample images, :func:`package_images`), ``--fields N`` synthetic
microscopy fields (filaments, textured nuclei, puncta, PSF blur: ``data.microscopy_field``),
``--dead-leaves N`` dead-leaves images (``data.dead_leaves``), ``--pg-fraction F`` (that fraction of
patches gets Poisson-Gaussian noise with a random photon count and read noise, :func:`noisy_batch`),
``--init CKPT --lr 2e-4`` to fine-tune an existing model instead of starting at random (the
starting file's sha256 and recipe are recorded), and ``--arch unet`` (Noise2Noise's U-Net, e.g.
``--features 32 --depth 4``; ``unet-res`` predicts the noise, as DnCNN does) for the size
comparison (``scripts/train_candidates.py`` trains several side by side). The held-out scores
include Poisson-Gaussian noise (20 and 100 photons, read noise 0.01) as ``pg20`` / ``pg100``. The
defaults stay the shipped model's recipe, so ``--steps 12401`` still reproduces it.

    python scripts/train_denoiser.py --init src/napari_ssl_restore/weights/dncnn_blind_gray.pt \
        --lr 2e-4 --steps 800 --package-images --pg-fraction 0.5 --out /tmp/ft.pt

Long CPU runs are resumable: the state (model, optimiser, the sampler's and the noise's random
generators, the step, the held-out log) is written atomically every ``--checkpoint-every`` seconds
and when a session ends (``--session-seconds`` / ``--session-steps``); the same command with
``--resume`` continues exactly there — bit for bit on the same CPU, thread count and library
versions (a test checks 3 + 5 steps against 8 straight). ``--eval-every N`` logs the held-out PSNR
along the way. For hours in the background beside light work (never beside tests or benchmarks):

    nice -n 19 python scripts/train_denoiser.py --arch unet-res --features 32 --depth 4 \
        --steps 200000 --eval-every 5000 --session-seconds 3600 --out runs/unet_res.pt [--resume]

Without ``--out`` the result would be installed as the shipped denoiser, which is refused while
that name has weights (a shipped name stands for one set of them): write ``--out``, then
``--install FILE --name NEW-NAME``. The defaults (3000 steps of 32 patches) are the
first release's CPU recipe, about 30 minutes on 2 cores. ``--time-budget SECONDS`` picks ``--steps``
from the speed of steps 10–50 (the shipped model: ``--time-budget 290`` on the H200); the steps used are
recorded in the checkpoint, so ``--steps`` reproduces the run (bit for bit on the same CPU and library
versions; on a GPU up to cuDNN's non-deterministic kernels). The held-out PSNR, the recipe and the
training time are stored in the checkpoint's provenance; ``--install`` copies a checkpoint into the
package and writes ``weights/manifest.json`` from it.
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
WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "src", "napari_ssl_restore", "weights")


def shipped_path(name: str) -> str:
    """Where the package keeps the shipped model ``name`` (``weights/<name with _>.pt``)."""
    return os.path.join(WEIGHTS, name.replace("-", "_") + ".pt")


def _luminance_and_channel(img: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """An 8-bit photograph as float [0, 1]: grey, or (colour) its luminance and one random channel."""
    from skimage import color

    img = np.asarray(img, dtype=np.float32) / 255.0
    if img.ndim == 2:
        return [img]
    return [color.rgb2gray(img[..., :3]).astype(np.float32),
            np.ascontiguousarray(img[..., int(rng.integers(3))])]


def package_images(rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    """Sample images other installed packages ship (none held out, none downloaded): matplotlib's
    ``grace_hopper.jpg`` (a US Navy photograph, public domain) and ``s1045.ima.gz`` (an MRI slice
    of its examples), and PyWavelets' ``aero`` and ``ascent`` when PyWavelets is installed (its
    ``camera`` is scikit-image's held-out one and is skipped)."""
    from matplotlib import cbook, image

    out, names = _luminance_and_channel(image.imread(cbook.get_sample_data("grace_hopper.jpg")),
                                        rng), ["matplotlib grace_hopper"]
    with cbook.get_sample_data("s1045.ima.gz") as f:
        mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256).astype(np.float32)
    out.append(np.clip(mri / np.percentile(mri, 99.9), 0, 1))
    names.append("matplotlib s1045 (MRI)")
    try:
        import pywt.data
    except ImportError:
        return out, names
    for name in ("aero", "ascent"):
        out += _luminance_and_channel(getattr(pywt.data, name)(), rng)
        names.append(f"pywt {name}")
    return out, names


def training_images(rng: np.random.Generator, args) -> tuple[list[np.ndarray], list[str]]:
    """The training set named by ``args`` and a description of each source, for the provenance."""
    from skimage import color, data

    from napari_ssl_restore.data import cells, dead_leaves, microscopy_field

    out, names = [], []
    for name in TRAIN_IMAGES:
        out += _luminance_and_channel(getattr(data, name)(), rng)
    out.append(color.rgb2gray(data.stereo_motorcycle()[0]).astype(np.float32))
    names += list(TRAIN_IMAGES) + ["stereo_motorcycle (left)"]
    if args.package_images:
        more, more_names = package_images(rng)
        out, names = out + more, names + more_names
    # synthetic images use seeds 1000+ so tests and benchmarks (small seeds) stay unseen
    out += [cells(256, seed=1000 + k) for k in range(args.synthetic)]
    out += [microscopy_field(256, seed=1000 + k) for k in range(args.fields)]
    out += [dead_leaves(256, seed=1000 + k) for k in range(args.dead_leaves)]
    names += [f"{args.synthetic} synthetic cells", f"{args.fields} microscopy fields",
              f"{args.dead_leaves} dead-leaves images"]
    return out, names


SCALES = (0.84, 0.71, 0.59, 0.5)
"""Downscaled copies each image also contributes (anti-aliased), so the model sees finer texture."""


class Patches:
    """Random training crops, drawn from each image and its downscaled copies."""

    def __init__(self, images, patch: int, rng: np.random.Generator):
        from skimage.transform import rescale

        self.patch, self.rng = patch, rng
        self.levels = [[im] + [rescale(im, s, order=1, anti_aliasing=True).astype(np.float32)
                               for s in SCALES if min(im.shape) * s >= patch]
                       for im in images]
        weights = np.array([im.size for im in images], float)
        self.p = np.sqrt(weights) / np.sqrt(weights).sum()  # big images count, but not overwhelm

    def sample(self, n: int) -> np.ndarray:
        rng, p = self.rng, self.patch
        out = np.empty((n, 1, p, p), np.float32)
        for b in range(n):
            levels = self.levels[rng.choice(len(self.levels), p=self.p)]
            # half at native scale, half from one of the downscaled copies
            img = levels[0] if rng.random() < 0.5 or len(levels) == 1 else \
                levels[1 + int(rng.integers(len(levels) - 1))]
            y = rng.integers(0, img.shape[0] - p + 1)
            x = rng.integers(0, img.shape[1] - p + 1)
            crop = np.rot90(img[y:y + p, x:x + p], int(rng.integers(4)))
            if rng.integers(2):
                crop = crop[:, ::-1]
            gain = rng.uniform(0.6, 1.0)
            out[b, 0] = crop * gain + rng.uniform(0, 1 - gain)
        return out


def _denoise(net, noisy: np.ndarray, device, a: float = 0.0, b: float = 0.0) -> np.ndarray:
    """One grey image through ``net``, wrapped as the video methods run it (a U-Net padded); a
    noise-aware network also reads the noise map of the variance model ``a·u + b``."""
    import torch

    from napari_ssl_restore.engine.video import wrap_denoiser

    x = torch.from_numpy(noisy.astype(np.float32))[None, None].to(device)
    noise = [(a, b)] if getattr(net, "noise_map", False) else None
    with torch.no_grad():
        return wrap_denoiser(net, 1, noise)(x)[0, 0].cpu().numpy()


def held_out_psnr(net, sigmas=(15, 25, 50), pg_photons=(20, 100), seed: int = 123,
                  device="cpu") -> dict[str, float]:
    """Mean PSNR over the held-out images at each σ (in 8-bit units, keys ``"15"`` ...) and with
    Poisson-Gaussian noise of each photon count at full scale and read noise 0.01 (``"pg20"`` ...).
    A noise-aware network is given the true noise parameters (as BM3D is given the true σ)."""
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
            out = _denoise(net, noisy, device, 0.0, (s / 255.0) ** 2)
            vals.append(psnr(img, np.clip(out, 0, 1), data_range=1.0))
        res[str(s)] = float(np.mean(vals))
    for photons in pg_photons:  # Poisson-Gaussian, read noise 0.01, the model applied directly
        vals = []
        for img in images:
            noisy = rng.poisson(img * photons) / photons + 0.01 * rng.standard_normal(img.shape)
            out = _denoise(net, noisy, device, 1.0 / photons, 0.01 ** 2)
            vals.append(psnr(img, np.clip(out, 0, 1), data_range=1.0))
        res[f"pg{photons:g}"] = float(np.mean(vals))
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


WEIGHT_FLOOR = 5.0 / 255.0
"""Noise standard deviation below which :func:`loss_weights` stops growing (a noiseless patch would
otherwise weigh without bound)."""
WEIGHT_REFERENCE = 25.0 / 255.0
"""The noise standard deviation whose patches weigh 1 in :func:`loss_weights`."""


def loss_weights(clean: np.ndarray, a: np.ndarray, b: np.ndarray, power: float):
    """Per-patch weights of the squared error that even out the noise levels: a patch whose noise
    variance (``a·u + b`` averaged over it) is ``v`` weighs ``((r² + f²) / (v + f²))^(power/2)``
    (``r`` :data:`WEIGHT_REFERENCE`, ``f`` :data:`WEIGHT_FLOOR`). With the plain mean (``power``
    0, returns None) the residual error of a patch grows with its noise, so the noisiest patches
    dominate the gradient and the low-noise end trains least; ``power=2`` weighs each patch's error
    relative to its noise variance, as a per-patch PSNR would."""
    if not power:
        return None
    var = a.reshape(-1) * np.clip(clean, 0, None).mean(axis=(1, 2, 3)) + b.reshape(-1)
    ref = WEIGHT_REFERENCE ** 2 + WEIGHT_FLOOR ** 2
    return ((ref / (var + WEIGHT_FLOOR ** 2)) ** (power / 2)).astype(np.float32)


PG_PHOTONS = (15.0, 1000.0)
"""Poisson-Gaussian patches: photons at full scale, log-uniform in this range (at 15 the noise at
full scale is about σ = 66/255, at 1000 about 8/255), and read noise uniform in [0, ``PG_READ``]."""
PG_READ = 0.03


def noisy_batch(clean: np.ndarray, rng: np.random.Generator, sigma_max: float,
                pg_fraction: float = 0.0, levels: bool = False):
    """Noisy copies of ``(N, 1, h, w)`` clean patches: white Gaussian noise of σ uniform in
    ``[0, sigma_max]`` (8-bit units) per patch; a ``pg_fraction`` of the patches instead get
    Poisson-Gaussian noise (random photon count and read noise per patch, as microscopes make it:
    signal-dependent, :data:`PG_PHOTONS`, :data:`PG_READ`). ``levels``: also return each patch's
    variance model ``(a, b)`` (``var = a·u + b``; shape ``(N, 1, 1, 1)``), for a noise map."""
    n = len(clean)
    sigma = rng.uniform(0, sigma_max / 255.0, (n, 1, 1, 1)).astype(np.float32)
    noisy = clean + sigma * rng.standard_normal(clean.shape).astype(np.float32)
    a, b = np.zeros_like(sigma), sigma ** 2
    if pg_fraction > 0:  # (skipped at 0, so Gaussian-only recipes draw the same numbers as before)
        pg = np.flatnonzero(rng.random(n) < pg_fraction)
        lo, hi = np.log(PG_PHOTONS[0]), np.log(PG_PHOTONS[1])
        photons = np.exp(rng.uniform(lo, hi, (len(pg), 1, 1, 1)))
        read = rng.uniform(0, PG_READ, (len(pg), 1, 1, 1))
        noisy[pg] = (rng.poisson(np.clip(clean[pg], 0, None) * photons) / photons
                     + read * rng.standard_normal(clean[pg].shape))
        a[pg], b[pg] = 1.0 / photons, read ** 2
    noisy = noisy.astype(np.float32)
    return (noisy, a, b) if levels else noisy


def noisy_batch_on_device(clean, generator, sigma_max: float, pg_fraction: float = 0.0):
    """:func:`noisy_batch`'s noise drawn by torch where ``clean`` (a tensor) lives
    (``--noise-on-device``), so that on a GPU the host only crops patches. Host noise for 128
    patches, half of them photon noise, took 18–25 ms on the 2-core development CPU — about a
    whole step of the shipped model's GPU run (12401 steps in 270 s); the gain on a GPU is not
    measured yet. The same distributions, other draws; every patch gets both kinds of noise and
    keeps one, so no step waits on the host for the number of photon-noise patches."""
    import torch

    n, dev = clean.shape[0], clean.device

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand((n, 1, 1, 1), generator=generator, device=dev)

    noisy = clean + uniform(0, sigma_max / 255.0) * torch.randn(clean.shape, generator=generator,
                                                                 device=dev)
    if pg_fraction > 0:
        photons = torch.exp(uniform(math.log(PG_PHOTONS[0]), math.log(PG_PHOTONS[1])))
        read = uniform(0, PG_READ)
        photon = (torch.poisson(clean.clamp(min=0) * photons, generator=generator) / photons
                  + read * torch.randn(clean.shape, generator=generator, device=dev))
        noisy = torch.where(uniform(0, 1) < pg_fraction, photon, noisy)
    return noisy


WARM_STEPS = 50
SESSION_ARGS = ("state", "resume", "checkpoint_every", "session_seconds", "session_steps",
                "eval_every", "threads", "out", "install", "name")
"""Arguments that shape a session, not the training: a resumed run may change them."""


def learning_rate(step: int, steps: int, lr0: float = 1e-3, lr1: float = 1e-5) -> float:
    """lr0 for the first ``WARM_STEPS`` steps (they also time ``--time-budget``), then cosine."""
    if step <= WARM_STEPS or steps <= WARM_STEPS:
        return lr0
    frac = (step - WARM_STEPS - 1) / (steps - WARM_STEPS)
    return lr1 + 0.5 * (lr0 - lr1) * (1 + math.cos(math.pi * frac))


def state_path(args) -> str:
    return args.state or os.path.splitext(args.out)[0] + ".state.pt"


def check_resumable(args, saved: dict | None = None) -> None:
    """Refuse a ``--resume`` whose state is missing or was trained with other settings (only the
    session's own arguments, :data:`SESSION_ARGS`, may change)."""
    import torch

    path = state_path(args)
    if saved is None:
        if not os.path.isfile(path):
            raise SystemExit(f"--resume: no training state at {path}; start without --resume "
                             "(or give --state).")
        saved = torch.load(path, map_location="cpu", weights_only=False)
    recipe = {k: v for k, v in vars(args).items() if k not in SESSION_ARGS}
    before = {"loss_power": 0.0, **saved["recipe"]}  # states saved before the option existed
    if before != {**recipe, "steps": before["steps"]}:
        changed = sorted(k for k in set(recipe) | set(before)
                         if k != "steps" and recipe.get(k) != before.get(k))
        raise SystemExit(f"--resume: {path} was trained with other settings "
                         f"({', '.join(changed)}); rerun with the same arguments.")


class Session:
    """One training session: the step, the state written to and read from ``--state``, and the
    loop that ends at ``--steps`` or at the session's limits (checkpointing on the way)."""

    def __init__(self, args, net, patches: Patches, rng: np.random.Generator, device):
        import torch

        self.args, self.net, self.patches, self.rng, self.device = args, net, patches, rng, device
        self.opt = torch.optim.Adam(net.parameters(), lr=args.lr)
        self.noise_gen = None
        if args.noise_on_device:
            self.noise_gen = torch.Generator(device=device)
            self.noise_gen.manual_seed(args.seed)
        self.state_path = state_path(args)
        self.recipe = {k: v for k, v in vars(args).items() if k not in SESSION_ARGS}
        self.done, self.log, self.spent, self.t0 = 0, [], 0.0, time.time()

    def seconds(self) -> float:
        """Training seconds over every session so far."""
        return self.spent + time.time() - self.t0

    def step(self, _it):
        import torch

        args, device = self.args, self.device
        clean = self.patches.sample(args.batch_size)
        weight = None  # per-patch weights of the squared error (--loss-power)
        if self.noise_gen is not None:
            clean = torch.from_numpy(clean).to(device, non_blocking=True)
            noisy = noisy_batch_on_device(clean, self.noise_gen, args.sigma_max, args.pg_fraction)
        elif args.noise_map:  # the network reads the noise level at each pixel beside the image
            from napari_ssl_restore.physics.noise import noise_std_map

            noisy, a, b = noisy_batch(clean, self.rng, args.sigma_max, args.pg_fraction, True)
            weight = loss_weights(clean, a, b, args.loss_power)
            noisy = torch.from_numpy(noisy)
            noisy = torch.cat([noisy, noise_std_map(noisy, a, b)], 1)
            clean, noisy = torch.from_numpy(clean).to(device), noisy.to(device)
        else:
            noisy = torch.from_numpy(noisy_batch(clean, self.rng, args.sigma_max,
                                                 args.pg_fraction))
            clean, noisy = torch.from_numpy(clean).to(device), noisy.to(device)
        if weight is None:
            return torch.mean((self.net(noisy) - clean) ** 2)
        error = torch.mean((self.net(noisy) - clean) ** 2, dim=(1, 2, 3))
        return torch.mean(torch.from_numpy(weight).to(device) * error)

    def resume(self) -> None:
        """Load the state: weights, optimiser, both random generators, step, log, seconds."""
        import torch

        saved = torch.load(self.state_path, map_location=self.device, weights_only=False)
        check_resumable(self.args, saved)
        self.net.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.rng.bit_generator.state = saved["rng"]
        if self.noise_gen is not None:
            self.noise_gen.set_state(saved["noise_gen"].cpu())
        self.done, self.log, self.spent = saved["step"], saved["log"], saved["seconds"]
        self.args.steps = saved["recipe"]["steps"]
        print(f"resumed {self.state_path} at step {self.done}/{self.args.steps} "
              f"({self.spent:.0f} s so far)", flush=True)

    def save(self, steps: int) -> None:
        """Everything the next step depends on, written to a temporary file then renamed."""
        import torch

        blob = {"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "rng": self.rng.bit_generator.state, "step": self.done, "log": self.log,
                "seconds": self.seconds(),
                "noise_gen": self.noise_gen.get_state() if self.noise_gen is not None else None,
                "recipe": {**self.recipe, "steps": steps}}
        tmp = self.state_path + ".tmp"
        torch.save(blob, tmp)
        os.replace(tmp, self.state_path)

    def advance(self, n: int, total: int, limit_s: float = 0.0) -> int:
        """Up to ``n`` steps after ``done`` of ``total`` on the engine's loop; ends early after
        ``limit_s`` seconds (0: never). Returns the steps taken."""
        from napari_ssl_restore.engine.train import optimise

        lr0 = self.args.lr
        for group in self.opt.param_groups:  # the loop scales the rate it finds: start from lr0
            group["lr"] = lr0
        began, first, last = time.time(), self.done, 0.0
        gen = optimise(self.step, self.opt, n, step0=first, total=total,
                       lr_factor=lambda it: learning_rate(first + it, total, lr0, lr0 / 100) / lr0,
                       finished=(lambda _it: time.time() - began >= limit_s) if limit_s else None,
                       check_every=5)
        while True:
            try:
                report = next(gen)
            except StopIteration as end:
                self.done += end.value.steps
                return end.value.steps
            if time.time() - last > 5 or report.step == report.total:
                last = time.time()
                print(f"step {report.step}/{report.total}  loss {report.metrics['loss']:.3e}  "
                      f"{self.seconds():.0f} s", flush=True)

    def train(self) -> tuple[int, int]:
        """This session's steps; returns ``(done, total)`` (``done < total``: paused)."""
        args = self.args
        if args.resume:
            self.resume()
        steps = args.steps
        if args.time_budget > 0 and not args.resume:  # time the warm-up (after 10 start-up steps)
            self.advance(10, steps)
            t10 = time.time()
            self.advance(WARM_STEPS - 10, steps)
            per_step = (time.time() - t10) / (WARM_STEPS - 10)
            steps = WARM_STEPS + max(0, int((args.time_budget - self.seconds()) / per_step))
            print(f"{per_step * 1000:.1f} ms/step: {steps} steps fit in {args.time_budget:.0f} s",
                  flush=True)
        t0 = time.time()
        end = min(steps, self.done + args.session_steps) if args.session_steps else steps
        while self.done < end:
            left = args.session_seconds - (time.time() - t0) if args.session_seconds else math.inf
            if left <= 0:
                break
            chunk = end - self.done
            if args.eval_every:
                chunk = min(chunk, args.eval_every - self.done % args.eval_every)
            self.advance(chunk, steps, min(args.checkpoint_every, left))
            if args.eval_every and self.done % args.eval_every == 0:
                self.log.append({"step": self.done, "seconds": round(self.seconds()),
                                 "held_out_psnr": held_out_psnr(self.net, device=self.device)})
                print("held-out", json.dumps(self.log[-1]), flush=True)
            self.save(steps)
        return self.done, steps


def shipped_entries() -> dict:
    """The package's ``weights/manifest.json`` (:data:`WEIGHTS`): shipped name -> entry."""
    manifest = os.path.join(WEIGHTS, "manifest.json")
    if not os.path.isfile(manifest):
        return {}
    with open(manifest, encoding="utf-8") as f:
        return json.load(f)


def install(ckpt_path: str, name: str = "") -> str:
    """Copy a trained checkpoint into the package as the shipped model ``name`` (default: the
    shipped denoiser's name, ``SHIPPED_DENOISER``) and record it in ``weights/manifest.json``; the
    other shipped models stay listed, so an earlier release's model remains loadable by name.

    A shipped name stands for one set of weights (results name it for reproducibility): a name
    already shipped with other weights is refused — install under a new name, and point
    ``core.models.SHIPPED_DENOISER`` at it to make it the default."""
    import shutil

    from napari_ssl_restore.core.models import SHIPPED_DENOISER, load_checkpoint, sha256_file

    name = name or SHIPPED_DENOISER
    ckpt = load_checkpoint(ckpt_path)
    prov = ckpt["provenance"]
    if prov.get("script") != "scripts/train_denoiser.py" or "held_out_psnr" not in prov:
        raise SystemExit(f"{ckpt_path}: not a checkpoint written by this script.")
    target = shipped_path(name)
    entries = shipped_entries()
    if name in entries and entries[name].get("sha256") != sha256_file(ckpt_path):
        raise SystemExit(f"a model named {name!r} is already shipped with other weights; shipped "
                         "names are kept for reproducibility: pass a new --name (and set "
                         "core.models.SHIPPED_DENOISER to it to make it the default).")
    if os.path.abspath(ckpt_path) != os.path.abspath(target):
        shutil.copyfile(ckpt_path, target)
    digest = sha256_file(target)
    recipe = prov["recipe"]
    entry = {"file": os.path.basename(target), "sha256": digest,
             "architecture": ckpt["architecture"],
             "config": dict(ckpt["config"]), "sigma_range_8bit": [0, recipe["sigma_max"]],
             "recipe": recipe, "held_out": prov["held_out"],
             "held_out_psnr": prov["held_out_psnr"],
             "train_seconds": prov.get("train_seconds"), "train_device": prov.get("train_device")}
    entries[name] = entry
    manifest = os.path.join(WEIGHTS, "manifest.json")
    with open(manifest + ".tmp", "w", encoding="utf-8") as f:
        json.dump(entries, f, indent=2)
        f.write("\n")
    os.replace(manifest + ".tmp", manifest)
    print(f"installed {target} as {name!r} (sha256 {digest}) and updated {manifest}")
    return digest


def parser() -> argparse.ArgumentParser:
    """The command line (every training setting, session and install option)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--time-budget", type=float, default=0.0,
                    help="seconds of training; overrides --steps (timed on steps 10-50)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--patch", type=int, default=48)
    ap.add_argument("--arch", choices=("dncnn", "unet", "unet-res"), default="dncnn",
                    help="dncnn (residual, --depth layers), unet (Noise2Noise's, --depth levels; "
                         "e.g. --features 32 --depth 4) or unet-res (the same U-Net predicting "
                         "the noise, as DnCNN does)")
    ap.add_argument("--noise-map", action="store_true",
                    help="(unet, unet-res) the noise-aware candidate: the network also reads the "
                         "noise standard deviation at each pixel (FFDNet's noise map), from each "
                         "patch's noise parameters")
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--depth", type=int, default=12)
    ap.add_argument("--sigma-max", type=float, default=55.0, help="in 8-bit units")
    ap.add_argument("--synthetic", type=int, default=24, help="synthetic cells (data.cells)")
    ap.add_argument("--fields", type=int, default=0,
                    help="synthetic microscopy fields (data.microscopy_field)")
    ap.add_argument("--dead-leaves", type=int, default=0, help="dead-leaves images (data.dead_leaves)")
    ap.add_argument("--package-images", action="store_true",
                    help="also train on matplotlib's and PyWavelets' sample images")
    ap.add_argument("--pg-fraction", type=float, default=0.0,
                    help="fraction of patches given Poisson-Gaussian noise instead of Gaussian")
    ap.add_argument("--loss-power", type=float, default=0.0,
                    help="(--noise-map) weigh each patch's squared error by its noise variance to "
                         "the power -p/2 (loss_weights): 0 the plain mean, 2 relative to the "
                         "noise, so low-noise patches count as much as noisy ones")
    ap.add_argument("--noise-on-device", action="store_true",
                    help="draw the noise with torch on --device instead of NumPy on the host "
                         "(for a GPU: the host then only crops patches; other draws, so not the "
                         "shipped recipe's)")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (cosine to 1%%)")
    ap.add_argument("--init", metavar="CKPT", default="",
                    help="start from this checkpoint's weights (fine-tune) instead of at random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")
    ap.add_argument("--out", default="",
                    help="checkpoint to write; default: install it as the shipped denoiser "
                         "(refused where that name ships other weights: --out, then --install "
                         "with a new --name)")
    ap.add_argument("--state", default="",
                    help="training state (model, optimiser, sampler and noise RNGs, step, log), "
                         "written atomically every --checkpoint-every seconds and when a session "
                         "ends; default: OUT with .state.pt")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run saved in --state exactly where it stopped (the same "
                         "recipe; bit for bit on the same CPU, threads and library versions)")
    ap.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS")
    ap.add_argument("--session-seconds", type=float, default=0.0,
                    help="end this session after so many seconds of training (the state is "
                         "saved; --resume continues); 0 = until --steps")
    ap.add_argument("--session-steps", type=int, default=0,
                    help="end this session after so many steps (as --session-seconds)")
    ap.add_argument("--eval-every", type=int, default=0,
                    help="log the held-out PSNR every so many steps (kept in the state and the "
                         "final checkpoint)")
    ap.add_argument("--install", metavar="CKPT", default="",
                    help="ship CKPT (copy into the package, record it in the manifest) and exit")
    ap.add_argument("--name", default="",
                    help="with --install: the shipped model's name (default: the shipped "
                         "denoiser's); other shipped models stay")
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.install:
        install(args.install, args.name)
        return 0
    ship = not args.out
    if ship:
        from napari_ssl_restore.core.models import SHIPPED_DENOISER

        if SHIPPED_DENOISER in shipped_entries():  # refused before training, not after it
            ap.error(f"the shipped denoiser {SHIPPED_DENOISER!r} already has weights, and a "
                     "shipped name stands for one set of them: pass --out FILE, then --install "
                     "FILE --name NEW-NAME")
        args.out = shipped_path(SHIPPED_DENOISER)

    if args.resume:  # before the training set is built
        check_resumable(args)
    if args.noise_map and (args.arch == "dncnn" or args.noise_on_device):
        ap.error("--noise-map needs --arch unet or unet-res, and host noise (no "
                 "--noise-on-device)")
    if args.loss_power and not args.noise_map:
        ap.error("--loss-power weighs patches by their noise level: it needs --noise-map")
    import torch

    from napari_ssl_restore.core.models import checkpoint, save_model
    from napari_ssl_restore.engine.train import seeded_init
    from napari_ssl_restore.nets.dncnn import DnCNN
    from napari_ssl_restore.nets.unet import UNet

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick its kernels
    rng = np.random.default_rng(args.seed)
    images, sources = training_images(rng, args)
    patches = Patches(images, args.patch, rng)
    if args.init:
        from napari_ssl_restore.core.models import build, load_checkpoint, sha256_file

        init_ckpt = load_checkpoint(args.init)
        net = build(init_ckpt)
        start = {"init": os.path.basename(args.init), "init_sha256": sha256_file(args.init),
                 "init_recipe": init_ckpt.get("provenance", {}).get("recipe")}
    else:
        with seeded_init(args.seed):
            net = (DnCNN(1, 1, args.features, args.depth) if args.arch == "dncnn" else
                   UNet(1, 1, args.features, args.depth, residual=args.arch == "unet-res",
                        noise_map=args.noise_map))
        start = {}
    net = net.to(device)
    run = Session(args, net, patches, rng, device)
    done, steps = run.train()
    if done < steps:
        print(f"session ended at step {done}/{steps}; the state is in {run.state_path}: "
              "continue with the same arguments and --resume", flush=True)
        return 0
    log, seconds = run.log, run.seconds()
    scores = held_out_psnr(net, device=device)
    print("held-out PSNR (dB) by sigma:", json.dumps(scores))
    recipe = {k: v for k, v in vars(args).items()
              if k not in ("time_budget", "init") and (k == "threads" or k not in SESSION_ARGS)}
    recipe.update(steps=steps, features=net.config["features"], depth=net.config["depth"],
                  **start)
    recipe["versions"] = _versions()
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"{device.type} ({args.threads} threads)")
    arch = "unet" if isinstance(net, UNet) else "dncnn"
    recipe["arch"] = arch + ("-res" if getattr(net, "residual", False) else "")  # as --arch
    ckpt = checkpoint(net, architecture=arch, normalization={"kind": "percentile", "low": 0.1,
                                                               "high": 99.9},
                      provenance={"method": "dncnn", "script": "scripts/train_denoiser.py",
                                  "recipe": recipe, "train_images": sources,
                                  "held_out": list(HELD_OUT), "held_out_psnr": scores,
                                  "held_out_log": log,
                                  "train_seconds": round(seconds), "train_device": where})
    ckpt["provenance"]["saved"] = "reproducible"  # keep the file identical across reruns
    path = save_model(ckpt, args.out)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.2f} MB), {steps} steps in "
          f"{seconds:.0f} s on {where}")
    if ship:
        install(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
