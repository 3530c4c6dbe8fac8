"""Unpaired translation: Cycle-Dehaze against DCP and Double-DIP, disentangled deblurring against
Richardson–Lucy and DIP with a guessed PSF.

    python benchmarks/bench_unpaired.py [--steps 1000] [--size 128] [--test 4] [--no-dip]
        [--figure docs/unpaired.png]
    # one method's settings, one training per seed, on fields never used to choose them:
    python benchmarks/bench_unpaired.py --only deblur --steps 2000 --test 12 --no-dip \
        --test-seed 500 --seeds 0 1 --variants "" --figure docs/deblur.png
    # the same on real image content (crops of scikit-image's retina under the same blurs):
    python benchmarks/bench_unpaired.py --only deblur --fields retina --steps 2000 --test 12 \
        --no-dip --test-seed 500 --seeds 0 1 --variants ""
    # Cycle-Dehaze and DCP at their defaults on hazy colour photographs with real depth:
    python benchmarks/bench_unpaired.py --only photos --steps 2000 --seeds 0 1
    # the input noise estimate the synthetic pairs get, against the truth:
    python benchmarks/bench_unpaired.py --only noise

Data (all synthetic, offline; ``napari_ssl_restore.data``):

- dehazing: the methods train on ``hazy_fields(n=8, seed=0)`` (hazy widefield fields, each with its
  own smooth transmission map and airlight, Poisson noise) and its clear examples (other fields,
  seeds 1000+: unpaired, never the truth); they are scored on ``hazy_fields(n=--test, seed=500)``,
  fields and haze maps never seen in training (``mode="apply"`` with the saved model).
- deblurring: the same with ``blurred_fields`` (Gaussian, motion and defocus blurs drawn at
  random per field, Poisson-Gaussian noise); the test fields' kernels are new draws. With
  ``--fields retina`` the fields are 128² crops of the green channel of scikit-image's retina
  (real content; training crops 0-7 blurred and 8-11 sharp, held-out crops 12-23 blurred) under
  the same blur draws and noise.
- photographs (``--only photos``): three 256² crops of scikit-image's Middlebury motorcycle (colour)
  hazed through the pair's own disparity at two densities (``data.hazy_scene``, β 1 and 2); the
  clear examples are other scenes (:func:`clear_photographs`); Cycle-Dehaze trains on the six hazy
  crops themselves, as a user trains on their image (no truth is used).

Scores: PSNR / SSIM against the truth **after the best gain and offset** (least squares) for every
method alike — an unpaired method learns the clear domain's look, not the truth's intensity units
(its examples may come from another microscope), so absolute levels are not comparable. Seconds:
training once (amortised over the test set) and applying per field, CPU, 2 cores.
Cycle-Dehaze trains once and restores two ways: the paper's Laplacian pyramid from half size, and
whole planes (the method's default since this benchmark); its perceptual ablation restores with the
pyramid. Disentangled deblurring is also run without its perceptual term.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_physics_gan import richardson_lucy_reflect  # the same RL baseline (reflect padding)

UNIT = (100.0, 4000.0)  # the samples' uint16 offset and gain


def unit(x) -> np.ndarray:
    return (np.asarray(x, np.float64) - UNIT[0]) / UNIT[1]


def fitted(ref, est) -> np.ndarray:
    """``est`` under the gain and offset that best match ``ref`` (least squares)."""
    a = np.stack([est.ravel(), np.ones(est.size)], 1)
    coef = np.linalg.lstsq(a, ref.ravel(), rcond=None)[0]
    return (a @ coef).reshape(ref.shape)


def score(ref, est) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    f = fitted(ref, est)
    colour = -1 if ref.ndim == 3 else None  # (Y, X, C) photographs: SSIM per channel, averaged
    return (peak_signal_noise_ratio(ref, f, data_range=1.0),
            structural_similarity(ref, f, data_range=1.0, channel_axis=colour))


def scorer(truth, units=unit):
    """``rows`` (name -> (per-field scores, seconds)) and ``add(name, stack, seconds="")``;
    ``units`` maps a method's output to the truth's [0, 1] (default: the samples' uint16 units)."""
    rows: dict[str, tuple] = {}

    def add(name, stack, sec=""):
        rows[name] = ([score(truth[k], units(stack[k])) for k in range(len(truth))], sec)

    return rows, add


def table(title: str, rows: dict[str, tuple]) -> None:
    print(f"\n### {title}\n")
    print("| method | PSNR (dB) | SSIM | per-field PSNR | seconds |")
    print("|---|---|---|---|---|")
    for name, (vals, sec) in rows.items():
        p = [v[0] for v in vals]
        s = [v[1] for v in vals]
        print(f"| {name} | {np.mean(p):.2f} | {np.mean(s):.3f} | "
              f"{' / '.join(f'{x:.1f}' for x in p)} | {sec} |", flush=True)


def _value(text: str):
    """A setting's value from the command line: a number, a boolean or a word."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def train_apply(method, train, test, steps, folder, tag, seed=0, **kw):
    from napari_ssl_restore import restore

    path = str(Path(folder) / f"{tag}.pt")
    t0 = time.perf_counter()
    res = restore(train["image"], method, axes="ZYX", clean=train["clean"], steps=steps,
                  save_model=path, device="cpu", seed=seed, full_output=True, **kw)
    learned = {k: v for k, v in res["provenance"].items()
               if k in ("kernel_std", "blur_shapes", "gamma", "airlight_shift")}
    if learned:
        print(f"  {method} {tag}: {learned}", flush=True)
    t_train = time.perf_counter() - t0
    apply_kw = {k: v for k, v in kw.items() if k in ("inference", "work_size")}
    t0 = time.perf_counter()
    out = restore(test["image"], method, axes="ZYX", mode="apply", model=path, device="cpu",
                  float_output=True, **apply_kw)
    t_apply = (time.perf_counter() - t0) / len(test["image"])
    return out, path, f"{t_train:.0f} train + {t_apply:.1f}/field"


def variants(method, label, args, train, test, folder, add):
    """``--variants`` of ``method``'s settings, one training per ``--seeds``, each a row
    ``"{label} {settings}, seed {seed}"``; returns the first one's output (for the figure)."""
    first = None
    for spec in args.variants:
        kw = {k: _value(v) for k, v in (item.split("=") for item in spec.split(",") if item)}
        for seed in args.seeds:
            out, _, sec = train_apply(method, train, test, args.steps, folder, f"v{seed}",
                                      seed=seed, **kw)
            add(f"{label} {spec or 'default'}, seed {seed}", out, sec)
            first = out if first is None else first
    return first


def dehazing(args, folder, shown):
    from napari_ssl_restore import restore
    from napari_ssl_restore.data import hazy_fields

    train = hazy_fields(n=8, size=args.size, seed=0)
    test = hazy_fields(n=args.test, size=args.size, seed=args.test_seed)
    truth = test["truth"]
    rows, add = scorer(truth)
    add("hazy input", test["image"])
    t0 = time.perf_counter()
    dcp = restore(test["image"], "dcp", axes="ZYX", patch_size=7, guided_radius=15,
                  float_output=True)
    add("DCP", dcp, f"{(time.perf_counter() - t0) / len(truth):.2f}/field")
    if args.variants:  # the physical translation's settings, one training per seed each
        t0 = time.perf_counter()
        add("DCP at its defaults (patch 15, guided radius 60)",
            restore(test["image"], "dcp", axes="ZYX", float_output=True),
            f"{(time.perf_counter() - t0) / len(truth):.2f}/field")
        cyc = variants("cycle-dehaze", "Cycle-Dehaze", args, train, test, folder, add)
        table(f"Dehazing (hazy fields seed {args.test_seed})", rows)
        shown["dehaze"] = (unit(test["image"][0]), truth[0], fitted(truth[0], unit(dcp[0])),
                           fitted(truth[0], unit(cyc[0])),
                           {k: v[0][0][0] for k, v in rows.items()})
        return rows
    if not args.no_dip:
        t0 = time.perf_counter()
        dd = np.stack([restore(test["image"][k], "double-dip", task="dehaze", patch_size=7,
                               guided_radius=15, device="cpu", float_output=True)
                       for k in range(len(truth))])
        add("Double-DIP dehaze", dd, f"{(time.perf_counter() - t0) / len(truth):.0f}/field")
    cfg = {"inference": "pyramid", "work_size": args.size // 2}  # the paper's restore
    cyc, path, sec = train_apply("cycle-dehaze", train, test, args.steps, folder, "cycle", **cfg)
    add("Cycle-Dehaze (pyramid from half size)", cyc, sec)
    t0 = time.perf_counter()
    full = restore(test["image"], "cycle-dehaze", axes="ZYX", mode="apply", model=path,
                   inference="full", device="cpu", float_output=True)
    add("Cycle-Dehaze, whole-plane inference", full,
        f"{(time.perf_counter() - t0) / len(truth):.1f}/field")
    if not args.no_ablation:
        nop, _, sec = train_apply("cycle-dehaze", train, test, args.steps, folder, "cycle0",
                                  perceptual_weight=0.0, **cfg)
        add("Cycle-Dehaze without perceptual term", nop, sec)
    table("Dehazing (held-out hazy fields)", rows)
    shown["dehaze"] = (unit(test["image"][0]), truth[0], fitted(truth[0], unit(dcp[0])),
                       fitted(truth[0], unit(cyc[0])),
                       {k: v[0][0][0] for k, v in rows.items()})
    return rows


PHOTO_CROPS = ((0, 0), (120, 240), (244, 485))
"""Top-left corners of the 256² crops of the hazy motorcycle (left, middle, right of the scene)."""
PHOTO_BETAS = (1.0, 2.0)
"""Haze densities of the photographs, ``t = exp(-beta * depth)`` (light and dense)."""


def clear_photographs(side: int = 256) -> np.ndarray:
    """Unpaired clear examples for the photographs: scikit-image's astronaut, cat, coffee and
    rocket, reduced (anti-aliased, by half where they stay larger than ``side``) and
    centre-cropped to ``side``² — other scenes, other cameras."""
    from skimage import data
    from skimage.transform import rescale

    out = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        img = getattr(data, name)() / 255.0
        img = rescale(img, max(0.5, side / min(img.shape[:2])), channel_axis=-1,
                      anti_aliasing=True)
        y0, x0 = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        out.append(img[y0:y0 + side, x0:x0 + side])
    return np.clip(np.rint(np.stack(out) * 255), 0, 255).astype(np.uint8)


def photographs(args, shown):
    """Cycle-Dehaze against DCP, both at their defaults, on hazy colour photographs with real
    depth: 256² crops of scikit-image's Middlebury motorcycle hazed through its own disparity
    (:func:`napari_ssl_restore.data.hazy_scene`) at two densities. Cycle-Dehaze trains on the
    hazy crops themselves (as a user trains on their image) with unpaired clear photographs of
    other scenes (:func:`clear_photographs`); no truth is used. One training per ``--seeds``."""
    from napari_ssl_restore import restore
    from napari_ssl_restore.data import hazy_scene

    hazy, truth, names = [], [], []
    for beta in PHOTO_BETAS:
        scene = hazy_scene(beta=beta)
        for y0, x0 in PHOTO_CROPS:
            window = (slice(y0, y0 + 256), slice(x0, x0 + 256))
            hazy.append(scene["image"][window])
            truth.append(scene["clean"][window] / 255.0)
            names.append(f"β {beta:g} @ ({y0}, {x0})")
    stack = np.stack(hazy)
    print("\ntest photographs:", ", ".join(names))
    rows, add = scorer(truth, units=lambda x: np.asarray(x, np.float64) / 255.0)  # 8-bit
    add("hazy input", stack)
    t0 = time.perf_counter()
    dcp = restore(stack, "dcp", axes="ZYXC", float_output=True)
    add("DCP", dcp,
        f"{(time.perf_counter() - t0) / len(truth):.2f}/photo")
    clear = clear_photographs()
    first = None
    for seed in args.seeds:
        t0 = time.perf_counter()
        cyc = restore(stack, "cycle-dehaze", axes="ZYXC", clean=clear, steps=args.steps,
                      device="cpu", seed=seed, float_output=True)
        add(f"Cycle-Dehaze (defaults), seed {seed}", cyc,
            f"{time.perf_counter() - t0:.0f} train + apply, all {len(truth)}")
        first = cyc if first is None else first
    table("Dehazing hazy photographs with real depth (motorcycle crops, β 1 then 2; both "
          "methods at their defaults: DCP patch 15, guided radius 60)", rows)
    shown["dehaze"] = (stack[-3] / 255.0, truth[-3],
                       np.clip(fitted(truth[-3], dcp[-3] / 255.0), 0, 1),
                       np.clip(fitted(truth[-3], first[-3] / 255.0), 0, 1),
                       {k: v[0][-3][0] for k, v in rows.items()})
    return rows


def retina_blurred(n: int, size: int, seed: int, start: int) -> dict:
    """As ``data.blurred_fields`` (the same blur draws, noise and uint16 units) but on real image
    content: ``size``² crops of the green channel of scikit-image's retina (offline), taken in
    order from a grid over its central part: crops ``start .. start + n - 1`` are blurred, the
    next four are the unpaired sharp examples (training: 0-7 blurred, 8-11 sharp; held out: 12 on)."""
    from skimage import data as skdata

    from napari_ssl_restore.data import _to16, blur_at_random

    g = skdata.retina()[..., 1].astype(np.float64)
    g = (g - np.percentile(g, 0.5)) / (np.percentile(g, 99.5) - np.percentile(g, 0.5))
    side = g.shape[0] // size - 2  # a margin of one crop, away from the dark rim
    crops = [np.clip(g[(1 + i) * size:(2 + i) * size, (1 + j) * size:(2 + j) * size], 0, 1)
             for i in range(side) for j in range(side)]
    if start + n + 4 > len(crops):
        raise SystemExit(f"the retina gives {len(crops)} crops of {size}²; asked for {start + n + 4}")
    truth = np.stack(crops[start:start + n]).astype(np.float32)
    image, names = blur_at_random(truth, seed)
    clean = np.stack(crops[start + n:start + n + 4])
    return {"image": image, "clean": _to16(clean), "truth": truth, "blurs": names}


def deblurring(args, folder, shown):
    from napari_ssl_restore import restore
    from napari_ssl_restore.data import blurred_fields
    from napari_ssl_restore.physics.operators import gaussian_psf

    if args.fields == "retina":
        train = retina_blurred(8, args.size, seed=0, start=0)
        test = retina_blurred(args.test, args.size, seed=args.test_seed, start=12)
    else:
        train = blurred_fields(n=8, size=args.size, seed=0)
        test = blurred_fields(n=args.test, size=args.size, seed=args.test_seed)
    truth = test["truth"]
    print("\ntest blurs:", ", ".join(test["blurs"]))
    rows, add = scorer(truth)
    add("blurred input", test["image"])
    guess = gaussian_psf(args.guess)
    y = unit(test["image"])
    for iters in (10, 30):
        t0 = time.perf_counter()
        rl = np.stack([richardson_lucy_reflect(np.clip(y[k], 0, None), guess, iters)
                       for k in range(len(truth))])
        add(f"Richardson–Lucy, guessed σ={args.guess:g}, {iters} it.", rl * UNIT[1] + UNIT[0],
            f"{(time.perf_counter() - t0) / len(truth):.2f}/field")
    if not args.no_dip:
        t0 = time.perf_counter()
        dip = restore(test["image"], "dip", axes="ZYX", task="deconv", psf_sigma=args.guess,
                      device="cpu", float_output=True)
        add(f"DIP deconv, guessed σ={args.guess:g}", dip,
            f"{(time.perf_counter() - t0) / len(truth):.0f}/field")
    if args.variants is not None:  # disentangled deblurring's settings, one training per seed
        dis = variants("disentangled-deblur", "disentangled", args, train, test, folder, add)
    else:
        dis, _, sec = train_apply("disentangled-deblur", train, test, args.steps, folder, "dis")
        add("disentangled deblurring", dis, sec)
    if not args.no_ablation and args.variants is None:
        nop, _, sec = train_apply("disentangled-deblur", train, test, args.steps, folder,
                                  "dis0", perceptual_weight=0.0)
        add("disentangled, no perceptual term", nop, sec)
    table("Deblurring (held-out fields, unseen blurs)", rows)
    best_rl = max((k for k in rows if k.startswith("Richardson")),
                  key=lambda k: np.mean([v[0] for v in rows[k][0]]))
    rl_iters = 10 if ", 10 it." in best_rl else 30
    rl0 = richardson_lucy_reflect(np.clip(y[0], 0, None), guess, rl_iters)
    shown["deblur"] = (y[0], truth[0], fitted(truth[0], rl0), fitted(truth[0], unit(dis[0])),
                       {k: v[0][0][0] for k, v in rows.items()}, best_rl)
    return rows


def noise_estimates(args) -> None:
    """The input noise model the synthetic pairs get (``noise_of_image``) against the truth, on
    each kind of input this page and bench_physics_gan.py train on: the four-neighbour residual,
    the smooth-block fit (``noise_fit``) and which one the texture rule keeps. Intensity units:
    fields as the samples' (uint16 - 100) / 4000, photographs as grey levels / 255."""
    from scipy import ndimage as ndi

    from napari_ssl_restore.data import add_noise, blurred_fields, cells, hazy_fields, hazy_scene
    from napari_ssl_restore.physics.estimate import noise_fit
    from napari_ssl_restore.physics.noise import noise_of_image
    from napari_ssl_restore.physics.operators import gaussian_psf

    def fields(data, variance):
        u = (data["image"][:4].astype(np.float32) - UNIT[0]) / UNIT[1]
        return u[..., None], variance

    cases = {}
    for seed in (0, args.test_seed):
        cases[f"hazy_fields seed {seed}"] = fields(hazy_fields(n=8, size=args.size, seed=seed),
                                                   lambda m: m / 300)
        cases[f"blurred_fields seed {seed}"] = fields(
            blurred_fields(n=8, size=args.size, seed=seed), lambda m: m / 300 + 1e-4)
    for seed in (10, 11, 12):  # bench_physics_gan.py's deconvolution fields
        blurred = ndi.convolve(cells(128, seed=seed), gaussian_psf(2.5), mode="reflect")
        y = np.clip(add_noise(blurred, 0.01, poisson=200, seed=seed), 0, None)
        cases[f"physics-GAN deconvolution field {seed}"] = (y[None, ..., None].astype(np.float32),
                                                             lambda m: m / 200 + 1e-4)
    for beta in PHOTO_BETAS:
        img = hazy_scene(beta=beta)["image"][:256, :256].astype(np.float32) / 255.0
        cases[f"hazy motorcycle β {beta:g} (8-bit)"] = (img[None], lambda m: 1 / 12 / 255 ** 2)
    print("\n| input | true σ | neighbour residual | smooth-block fit | ratio | kept |")
    print("|---|---|---|---|---|---|")
    for name, (planes, variance) in cases.items():
        med = float(np.median(planes))
        fit = noise_fit([p[..., c] for p in planes for c in range(planes.shape[-1])])
        smooth = np.sqrt(max(fit["a"] * med + fit["b"], 0.0))
        plain = noise_of_image(planes, texture_ratio=0.0)
        kept = noise_of_image(planes)
        residual = np.sqrt(plain.gain * med + plain.offset)
        which = "residual" if (kept.gain, kept.offset) == (plain.gain, plain.offset) else "fit"
        print(f"| {name} | {np.sqrt(variance(med)):.4f} | {residual:.4f} | {smooth:.4f} | "
              f"{smooth / residual:.2f} | {which} |")


def first_row(rows, prefix: str) -> str:
    """The row of a learned method the figure shows: the first one trained."""
    return next(k for k in rows if k.startswith(prefix))


def figure(shown, path, photos: bool = False):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(shown), 4, figsize=(12, 3.2 * len(shown)), squeeze=False)
    rows = []
    if "dehaze" in shown:
        hazy, truth, dcp, cyc, p = shown["dehaze"]
        rows.append((axes[0], [
            (hazy, f"hazy input {p['hazy input']:.1f} dB"), (truth, "truth"),
            (dcp, f"DCP {p['DCP']:.1f} dB"),
            (cyc, f"{first_row(p, 'Cycle-Dehaze')} {p[first_row(p, 'Cycle-Dehaze')]:.1f} dB")]))
    if "deblur" in shown:
        blurred, truth, rl, dis, p, rl_name = shown["deblur"]
        rows.append((axes[len(rows)], [
            (blurred, f"blurred input {p['blurred input']:.1f} dB"), (truth, "truth"),
            (rl, f"RL, guessed PSF {p[rl_name]:.1f} dB"),
            (dis, f"{first_row(p, 'disentangled')} {p[first_row(p, 'disentangled')]:.1f} dB")]))
    for row, panels in rows:
        for ax, (img, title) in zip(row, panels, strict=False):
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    first = "The dense-haze left photograph" if photos else "Held-out field 1"
    fig.suptitle(f"{first} (gain/offset fitted to the truth for display and PSNR)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"figure: {path}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--test", type=int, default=4, help="held-out fields per task")
    ap.add_argument("--guess", type=float, default=2.0, help="guessed Gaussian PSF std (px)")
    ap.add_argument("--only", choices=("dehaze", "deblur", "photos", "noise"), default=None,
                    help="one task; photos: dehazing hazy colour photographs with real depth; "
                         "noise: the input noise estimate against the truth on each kind of "
                         "input (neither in the default run)")
    ap.add_argument("--test-seed", type=int, default=500,
                    help="seed of the held-out fields (training fields: seed 0)")
    ap.add_argument("--variants", nargs="*", default=None,
                    help="only these Cycle-Dehaze (dehaze) or disentangled deblurring (deblur) "
                         "settings, e.g. '' 'translation=network' 'cycle_weight=5' (one training "
                         "per --seeds)")
    ap.add_argument("--fields", choices=("cells", "retina"), default="cells",
                    help="deblur: synthetic cell fields (data.blurred_fields) or crops of "
                         "scikit-image's retina (real content) under the same blurs and noise")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds")
    ap.add_argument("--no-dip", action="store_true", help="skip Double-DIP and DIP (slow)")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--figure", default="")
    args = ap.parse_args()
    if args.only == "noise":
        noise_estimates(args)
        return 0
    import torch

    what = ("6 photographs (256²)" if args.only == "photos"
            else f"{args.size}², {args.test} held-out fields")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, steps {args.steps}, "
          f"{what}")
    shown: dict = {}
    with tempfile.TemporaryDirectory() as folder:
        if args.only in (None, "dehaze"):
            dehazing(args, folder, shown)
        if args.only in (None, "deblur"):
            deblurring(args, folder, shown)
        if args.only == "photos":
            photographs(args, shown)
    if args.figure:
        figure(shown, args.figure, photos=args.only == "photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
