"""Physics-based GAN deconvolution against Richardson–Lucy and DIP, with the ablation.

    python benchmarks/bench_physics_gan.py [--size 128] [--steps 800] [--sigma 2.0] [--figure F]
        [--no-dip | --dip-cache DIR] [--variants 0,1] [--physics-weights 30,100]
        [--dehaze | --lateral | --sr | --inference]
    # real tissue instead of synthetic cells, at the method's defaults (2000 steps):
    python benchmarks/bench_physics_gan.py --tissue --seeds 0,5,10 --steps 2000 --sigma 2.5 \
        --no-dip --variants 0

Held-out synthetic fluorescence fields (``data.cells``, seeds 10 and 11) blurred by a Gaussian PSF
and Poisson-Gaussian noise; the clean examples are *other* fields (seeds 0-3: unpaired, never the
truth). Baselines: the blurred input; Richardson–Lucy with reflect padding at its best iteration
count (chosen on the truth: an upper bound of what a user tuning it by eye gets); DIP
``task="deconv"`` with the same PSF. Physics-GAN as :data:`VARIANTS`: its default, without the
adversarial term, the paper's loss (no synthetic pairs) and its ablation (physics only, adversarial
only), CycleGAN's downsampling generator; and the hallucination check, PSNR of ``H(G(y))`` against
``y``. A small CPU configuration (``--steps``; crops 64², 32 features):
the paper's size and length need a GPU.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

PAPER = {"synthetic_weight": 0.0}
"""The paper's loss: the physics and adversarial terms, no synthetic pairs."""
VARIANTS = (
    ("physics-GAN default (per-task adversarial term: off for deconv, on for sr and dehaze; "
     "+ synthetic pairs)", {}),
    ("physics + synthetic pairs, no adversarial (adversarial_weight=0)",
     {"adversarial_weight": 0.0}),
    ("both terms, the paper's loss (synthetic_weight=0)", PAPER),
    ("physics only (adversarial_weight=0, synthetic_weight=0)",
     {**PAPER, "adversarial_weight": 0.0}),
    ("adversarial only (physics_weight=0, synthetic_weight=0)", {**PAPER, "physics_weight": 0.0}),
    ("physics + synthetic, no adversarial, downs=2 (CycleGAN's generator)",
     {"adversarial_weight": 0.0, "downs": 2}),
)
"""The deconvolution ablation; the other modes run the first three."""


def psnr(a, b) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, float) - b) ** 2)))


def richardson_lucy_reflect(y, psf, iters):
    """RL with the image reflect-padded by the PSF's radius (a zero border darkens the edges)."""
    from skimage import restoration

    r = psf.shape[0] // 2 + 1
    padded = np.pad(y, r, mode="reflect")
    out = restoration.richardson_lucy(padded, psf, num_iter=iters, clip=False)
    return out[r:-r, r:-r]


def cached_dip(args, seed: int, run):
    """DIP's output and seconds, from ``--dip-cache`` when it holds this field's (DIP is the slow
    baseline and does not change with physics-GAN's settings), else run and stored there."""
    from pathlib import Path

    path = Path(args.dip_cache) / f"dip_deconv_{args.size}_{args.sigma:g}_{seed}.npz" \
        if args.dip_cache else None
    if path is not None and path.exists():
        with np.load(path) as f:
            return f["image"], float(f["seconds"])
    t0 = time.perf_counter()
    image = run()
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, image=image, seconds=seconds)
    return image, seconds


TISSUE_SIDE = 128
"""Side of the tissue crops (``--tissue``)."""


def tissue(index: int | None = None) -> np.ndarray:
    """A real stained tissue as a fluorescence-like field: the haematoxylin channel (nuclei) of
    scikit-image's immunohistochemistry image (colour deconvolution, ``rgb2hed``), scaled by its
    0.5 / 99.5 % percentiles to [0, 1] — real structure, other than the synthetic cells the method
    was tuned on. ``index`` 0–11: a 128² test crop (rows 0–2 of a 4 × 4 grid, left to right);
    ``None``: the four crops of the grid's last row, the unpaired clean examples (never a test
    crop)."""
    from skimage import color, data

    h = color.rgb2hed(data.immunohistochemistry())[..., 0]
    lo, hi = np.percentile(h, (0.5, 99.5))
    h = np.clip((h - lo) / (hi - lo), 0, 1).astype(np.float32)
    s = TISSUE_SIDE
    if index is None:
        return np.stack([h[3 * s:4 * s, k * s:(k + 1) * s] for k in range(4)])
    row, col = divmod(index, 4)
    if row > 2:
        raise ValueError("tissue crops are 0-11 (the last row holds the clean examples)")
    return h[row * s:(row + 1) * s, col * s:(col + 1) * s]


def main() -> int:
    from scipy import ndimage as ndi

    from napari_ssl_restore import restore
    from napari_ssl_restore.data import add_noise, cells
    from napari_ssl_restore.physics.operators import gaussian_psf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--sigma", type=float, default=2.0)
    ap.add_argument("--seeds", default="10,11")
    ap.add_argument("--train-seeds", default="0",
                    help="comma-separated training seeds (seed=) of every physics-GAN variant: "
                         "each field is trained once per seed and the table averages over both")
    ap.add_argument("--figure", default="")
    ap.add_argument("--no-dip", action="store_true", help="skip DIP (12 minutes a 128² image here)")
    ap.add_argument("--dip-cache", default="",
                    help="folder keeping DIP's deconvolutions between runs (reused when present)")
    ap.add_argument("--variants", default="",
                    help="comma-separated indices into VARIANTS to run (default: all)")
    ap.add_argument("--physics-weights", default="",
                    help="comma-separated extra physics_weight values to run with both terms")
    ap.add_argument("--tissue", action="store_true",
                    help="deconvolution of real tissue crops instead of synthetic cells: --seeds "
                         "then names crops 0-11 of the haematoxylin channel of scikit-image's "
                         "immunohistochemistry image, with four other crops of it as the clean "
                         "examples (see tissue())")
    ap.add_argument("--dehaze", action="store_true",
                    help="dehazing instead: held-out hazy fields against DCP (scored after the best "
                         "gain and offset, as bench_unpaired.py)")
    ap.add_argument("--lateral", action="store_true",
                    help="clean='lateral' instead: an anisotropic synthetic volume's axial blur "
                         "against Richardson-Lucy with the same axial kernel")
    ap.add_argument("--sr", action="store_true",
                    help="x4 super-resolution instead, against bicubic and DIP task='sr'")
    ap.add_argument("--inference", action="store_true",
                    help="instead: seconds and peak memory of applying a saved generator to a "
                         "2048² uint16 plane from the command line")
    args = ap.parse_args()
    if args.inference:
        return inference()
    if args.sr:
        return super_resolution(args)
    if args.dehaze:
        return dehaze(args)
    if args.lateral:
        return lateral(args)
    psf = gaussian_psf(args.sigma)
    clean_examples = (tissue() if args.tissue else
                      np.stack([cells(args.size, seed=s) for s in range(4)]).astype(np.float32))
    gan = {"steps": args.steps, "psf_sigma": args.sigma, "device": "cpu", "features": 32,
           "blocks": 6, "patch_size": 64, "batch_size": 4, "check_every": 100}
    rows: dict[str, list] = {}
    shown = None
    for seed in map(int, args.seeds.split(",")):
        truth = tissue(seed) if args.tissue else cells(args.size, seed=seed).astype(np.float32)
        blurred = ndi.convolve(truth, psf, mode="reflect")
        y = np.clip(add_noise(blurred, 0.01, poisson=200, seed=seed), 0, None).astype(np.float32)
        results = {"blurred input": (y, 0.0)}
        best = max(((psnr(np.clip(richardson_lucy_reflect(y, psf, k), 0, 1), truth), k)
                    for k in (5, 10, 20, 30, 50, 80)), key=lambda t: t[0])
        t0 = time.perf_counter()
        rl = richardson_lucy_reflect(y, psf, best[1])
        results[f"Richardson–Lucy (reflect, best {best[1]} it.)"] = (rl, time.perf_counter() - t0)
        dip = rl
        if not args.no_dip:
            dip, seconds = cached_dip(args, seed, lambda: restore(
                y, "dip", task="deconv", psf_sigma=args.sigma, device="cpu", float_output=True))
            results["DIP deconv"] = (dip, seconds)
        picked = [int(i) for i in args.variants.split(",")] if args.variants else None
        variants = tuple(v for i, v in enumerate(VARIANTS)
                         if picked is None or i in picked) + tuple(
            (f"physics-GAN, physics_weight={w:g}", {"physics_weight": w})
            for w in map(float, filter(None, args.physics_weights.split(","))))
        train_seeds = [int(v) for v in args.train_seeds.split(",")]
        for (label, extra), train_seed in ((v, t) for v in variants for t in train_seeds):
            t0 = time.perf_counter()
            out = restore(y, "physics-gan", clean=clean_examples, float_output=True,
                          full_output=True, seed=train_seed, **gan, **extra)
            seconds = time.perf_counter() - t0
            hg = ndi.convolve(out["image"], psf, mode="reflect")
            label = label if len(train_seeds) == 1 else f"{label} [training seed {train_seed}]"
            results[label] = (out["image"], seconds, psnr(hg, y))
            print(f"seed {seed}: {label}: kept step {out['provenance']['best_step']} by "
                  f"{out['provenance']['checkpoint_by']}, "
                  f"{out['provenance'].get('warning', 'no warning')}", flush=True)
            score = psnr(np.clip(out["image"], 0, 1), truth)
            if "adversarial only" not in label and (shown is None or (
                    shown[0] == seed and score > shown[1])):  # the first field's best variant
                shown = (seed, score, label, (y, rl, dip, out["image"], out["residual"], truth))
        for label, value in results.items():
            rows.setdefault(label, []).append(
                (psnr(np.clip(value[0], 0, 1), truth), value[1], value[2] if len(value) > 2 else None))
            print(f"seed {seed}: {label}: {rows[label][-1][0]:.2f} dB, {value[1]:.1f} s",
                  flush=True)
    fields = (f"tissue crops {args.seeds}" if args.tissue
              else f"{args.size}² fields, seeds {args.seeds}")
    print(f"Deconvolution, Gaussian PSF sigma={args.sigma}, Poisson-Gaussian noise, {fields} "
          f"(mean PSNR dB; seconds per image):")
    print("| method | PSNR (dB) | H(G(y)) vs y (dB) | s/image |")
    print("|---|---|---|---|")
    for label, vals in rows.items():
        p = np.mean([v[0] for v in vals])
        s = np.mean([v[1] for v in vals])
        h = [v[2] for v in vals if v[2] is not None]
        print(f"| {label} | {p:.2f} | {np.mean(h):.2f} |" if h else f"| {label} | {p:.2f} | – |",
              f"{s:.1f} |")
    if args.figure and shown is not None:
        import matplotlib

        matplotlib.use("Agg")
        import textwrap

        import matplotlib.pyplot as plt

        name = shown[2].split(" (")[0]
        variant = textwrap.fill(name if name.startswith("physics-GAN") else
                                f"physics-GAN: {name}", 34)
        titles = ["input (blurred, noisy)", "Richardson–Lucy", "DIP deconv", variant,
                  "residual |H(G(y)) − y|", "truth"]
        panels = list(zip(shown[3], titles, strict=False))
        if args.no_dip:
            del panels[2]
        fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
        for ax, (img, title) in zip(axes, panels, strict=False):
            ax.imshow(img, cmap="magma" if "residual" in title else "gray",
                      vmin=0, vmax=None if "residual" in title else 1)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=90)
        print(f"wrote {args.figure}")
    return 0


def dehaze(args) -> int:
    """task='dehaze' on held-out hazy fields (``data.hazy_fields``: other seeds than the clean
    examples) against DCP with the same patch (7, fields of 128²) — the operator's own estimate."""
    from bench_unpaired import score, unit

    from napari_ssl_restore import restore
    from napari_ssl_restore.data import hazy_fields

    gan = {"steps": args.steps, "device": "cpu", "features": 32, "blocks": 6, "patch_size": 64,
           "batch_size": 4, "check_every": 100, "task": "dehaze", "haze_patch": 7}
    rows: dict[str, list] = {}
    for seed in map(int, args.seeds.split(",")):
        d = hazy_fields(n=1, size=args.size, examples=4, seed=seed)
        y, truth = d["image"][0], d["truth"][0]
        t0 = time.perf_counter()
        results = {"hazy input": (y, 0.0)}
        dcp = restore(y, "dcp", patch_size=7, guided_radius=28)
        results["DCP (patch 7)"] = (dcp, time.perf_counter() - t0)
        for label, extra in VARIANTS[:3]:
            t0 = time.perf_counter()
            out = restore(y, "physics-gan", clean=d["clean"], float_output=True, **gan, **extra)
            results[label] = (out, time.perf_counter() - t0)
        for label, (img, sec) in results.items():
            p, ss = score(truth, unit(img))
            rows.setdefault(label, []).append((p, ss, sec))
            print(f"seed {seed}: {label}: {p:.2f} dB / {ss:.3f}, {sec:.1f} s", flush=True)
    print(f"Dehazing, {args.size}² hazy fields, seeds {args.seeds} (PSNR/SSIM after the best gain "
          "and offset; seconds per field):")
    print("| method | PSNR (dB) | SSIM | s/field |")
    print("|---|---|---|---|")
    for label, vals in rows.items():
        p, ss, sec = np.mean(vals, axis=0)
        print(f"| {label} | {p:.2f} | {ss:.3f} | {sec:.1f} |")
    return 0


def super_resolution(args, factor: int = 4) -> int:
    """×4 super-resolution of a held-out ``data.cells`` field (``args.size * 4``² truth,
    anti-aliased downsampling — the method's own ``H`` — plus Poisson-Gaussian noise) against
    bicubic interpolation and DIP ``task='sr'``; clean examples: four other fields."""
    import torch
    from skimage.transform import resize

    from napari_ssl_restore import restore
    from napari_ssl_restore.data import add_noise, cells
    from napari_ssl_restore.physics.operators import downsample

    big = args.size * factor
    clean = np.stack([cells(big, seed=s) for s in range(4)]).astype(np.float32)
    gan = {"steps": args.steps, "device": "cpu", "features": 32, "blocks": 6, "patch_size": 32,
           "batch_size": 4, "check_every": 100, "task": "sr", "sr_factor": factor}
    rows: dict[str, list] = {}
    for seed in map(int, args.seeds.split(",")):
        truth = cells(big, seed=seed).astype(np.float32)
        low = downsample(torch.from_numpy(truth)[None, None], factor)[0, 0].numpy()
        y = np.clip(add_noise(low, 0.01, poisson=200, seed=seed), 0, None).astype(np.float32)
        t0 = time.perf_counter()
        results = {"bicubic": (resize(y, truth.shape, order=3), time.perf_counter() - t0)}
        if not args.no_dip:
            t0 = time.perf_counter()
            results["DIP sr"] = (restore(y, "dip", task="sr", sr_factor=factor, device="cpu",
                                         float_output=True), time.perf_counter() - t0)
        for label, extra in VARIANTS[:3]:
            t0 = time.perf_counter()
            out = restore(y, "physics-gan", clean=clean, float_output=True, **gan, **extra)
            results[label] = (out, time.perf_counter() - t0)
        tally(rows, seed, results, truth)
    print(f"x{factor} super-resolution, {args.size}² -> {big}² cells, seeds {args.seeds}:")
    print_table(rows, "s/image")
    return 0


def inference(side: int = 2048) -> int:
    """A generator of the default size (trained 20 steps: the weights do not change the
    arithmetic) applied with ``--mode apply`` to a ``side``² uint16 TIFF through the CLI, in a
    child process: wall seconds (with Python's start and imports) and peak RSS."""
    import tempfile
    from pathlib import Path

    import tifffile
    from bench_scale import cli, measure

    from napari_ssl_restore import restore
    from napari_ssl_restore.data import cells

    with tempfile.TemporaryDirectory() as tmp:
        model, image = Path(tmp) / "g.pt", Path(tmp) / "plane.tif"
        small = cells(128, seed=1).astype(np.float32)
        restore(small, "physics-gan", clean=small[None], steps=20, check_every=10,
                save_model=str(model), device="cpu")
        big = np.tile(cells(512, seed=2), (side // 512, side // 512))
        tifffile.imwrite(image, (big * 3000 + 200).astype(np.uint16))
        argv, env = cli()
        print("| plane | s (CLI, apply) | peak RSS (MiB) |\n|---|---|---|")
        for tile in (0, 512):
            rss, seconds = measure(argv + ["run", "physics-gan", str(image), "--mode", "apply",
                                           "--model", str(model), "--device", "cpu",
                                           "--tile-size", str(tile), "-o",
                                           str(Path(tmp) / f"out{tile}.tif")], env)
            print(f"| {side}² uint16, tile_size {tile or '0 (from memory)'} | {seconds:.1f} | "
                  f"{rss:.0f} |", flush=True)
    return 0


def tally(rows: dict, seed: int, results: dict, truth) -> None:
    """PSNR (clipped to [0, 1]) and seconds of each ``label -> (image, seconds)`` into ``rows``."""
    for label, (img, sec) in results.items():
        p = psnr(np.clip(img, 0, 1), truth)
        rows.setdefault(label, []).append((p, sec))
        print(f"seed {seed}: {label}: {p:.2f} dB, {sec:.1f} s", flush=True)


def print_table(rows: dict, seconds: str) -> None:
    """The mean PSNR and seconds of every row, as a Markdown table."""
    print(f"| method | PSNR (dB) | {seconds} |")
    print("|---|---|---|")
    for label, vals in rows.items():
        p, sec = np.mean(vals, axis=0)
        print(f"| {label} | {p:.2f} | {sec:.1f} |")


def volume(size: int, depth: int, seed: int) -> np.ndarray:
    """A synthetic fluorescent volume (cubic voxels): puncta and straight filaments at random
    orientations, slightly smoothed, in [0, 1]."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    vol = np.zeros((depth, size, size), np.float32)
    shape = np.array(vol.shape)
    pts = (rng.random((size * 3, 3)) * shape).astype(int)
    vol[tuple(pts.T)] = rng.uniform(0.5, 1.0, len(pts))
    for _ in range(size // 4):
        a, d = rng.random(3) * shape, rng.standard_normal(3)
        line = a + np.linspace(-size / 3, size / 3, size * 2)[:, None] * d / np.linalg.norm(d)
        ok = ((line >= 0) & (line < shape)).all(1)
        vol[tuple(line[ok].astype(int).T)] = rng.uniform(0.3, 0.8)
    vol = ndi.gaussian_filter(vol, 0.7)
    return vol / vol.max()


def lateral(args) -> int:
    """clean='lateral' on a held-out anisotropic volume: the truth blurred by a Gaussian PSF of
    lateral std 1 px and axial std ``3 * args.sigma / 2`` px (cubic voxels) + Poisson-Gaussian
    noise. The target is the truth blurred by the lateral PSF in all three directions (what the
    lateral planes show); Richardson-Lucy (3-D, reflect-padded, best iteration count) undoes the
    same extra axial blur."""
    from scipy import ndimage as ndi
    from skimage import restoration

    from napari_ssl_restore import restore
    from napari_ssl_restore.data import add_noise
    from napari_ssl_restore.physics.operators import gaussian_kernel_1d

    lat, ax = 1.0, 1.5 * args.sigma
    extra = gaussian_kernel_1d(float(np.sqrt(ax ** 2 - lat ** 2)))[:, None, None]
    gan = {"steps": args.steps, "device": "cpu", "features": 32, "blocks": 6, "patch_size": 48,
           "batch_size": 4, "check_every": 100, "psf_sigma": lat, "axial_sigma": ax}
    rows: dict[str, list] = {}
    for seed in map(int, args.seeds.split(",")):
        truth = volume(args.size, 64, seed)
        target = ndi.gaussian_filter(truth, lat)
        blurred = ndi.gaussian_filter(truth, (ax, lat, lat))
        y = np.clip(add_noise(blurred, 0.01, poisson=200, seed=seed), 0, None).astype(np.float32)
        results = {"input (axial blur)": (y, 0.0)}
        r = extra.shape[0] // 2 + 1
        padded = np.pad(y, ((r, r), (0, 0), (0, 0)), mode="reflect")
        best = max(((psnr(np.clip(restoration.richardson_lucy(padded, extra, num_iter=k,
                                                               clip=False)[r:-r], 0, 1), target),
                     k) for k in (5, 10, 20, 30, 50)), key=lambda t: t[0])
        t0 = time.perf_counter()
        rl = restoration.richardson_lucy(padded, extra, num_iter=best[1], clip=False)[r:-r]
        results[f"Richardson–Lucy 3-D (best {best[1]} it.)"] = (rl, time.perf_counter() - t0)
        for label, extra_params in VARIANTS[:3]:
            t0 = time.perf_counter()
            out = restore(y, "physics-gan", axes="ZYX", clean="lateral", float_output=True,
                          **gan, **extra_params)
            results[label] = (out, time.perf_counter() - t0)
        tally(rows, seed, results, target)
    print(f"Axial deblurring (clean='lateral'), {args.size}² x 64 volume, lateral std {lat}, axial "
          f"std {ax} px, seeds {args.seeds} (PSNR dB against the laterally blurred truth):")
    print_table(rows, "s/volume")
    return 0


if __name__ == "__main__":
    sys.exit(main())
