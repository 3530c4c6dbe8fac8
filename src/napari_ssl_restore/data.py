"""Sample data made offline: images bundled with scikit-image plus synthetic microscopy.

Nothing here downloads anything. Every sample returns a dict with the degraded ``image``, its
``axes``, and the ground truth it was made from (``clean``, and for haze the ``transmission`` and
``airlight``) so the same samples serve the napari sample menu, the ``demo`` command, the tests and
the benchmarks.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi


def haze(clean: np.ndarray, transmission: np.ndarray, airlight) -> np.ndarray:
    """Koschmieder's haze model ``I = J t + A (1 - t)`` for float images in [0, 1]."""
    t = transmission[..., None] if clean.ndim == transmission.ndim + 1 else transmission
    return clean * t + np.asarray(airlight, dtype=np.float32) * (1.0 - t)


def _depth_from_disparity(disp: np.ndarray) -> np.ndarray:
    """Relative depth in [0, 1] from a disparity map whose unknown pixels are inf/NaN."""
    bad = ~np.isfinite(disp) | (disp <= 0)
    if bad.any():
        idx = ndi.distance_transform_edt(bad, return_distances=False, return_indices=True)
        disp = disp[tuple(idx)]
    depth = 1.0 / disp
    depth = (depth - depth.min()) / (depth.max() - depth.min())
    return ndi.gaussian_filter(depth, 2.0).astype(np.float32)


def hazy_scene(beta: float = 2.0, airlight=(0.85, 0.87, 0.9)) -> dict[str, Any]:
    """A hazy photograph with known ground truth.

    scikit-image's Middlebury motorcycle (left view) hazed with ``t = exp(-beta * depth)``, the depth
    taken from the pair's own disparity map, so transmission follows real scene geometry.
    """
    from skimage import data

    left, _, disp = data.stereo_motorcycle()
    clean = left.astype(np.float32) / 255.0
    depth = _depth_from_disparity(disp.astype(np.float32))
    t = np.exp(-beta * depth).astype(np.float32)
    hazy = haze(clean, t, airlight)
    img = np.clip(np.rint(hazy * 255), 0, 255).astype(np.uint8)
    return {"image": img, "axes": "YXC", "clean": left, "transmission": t,
            "airlight": np.asarray(airlight, np.float32), "name": "hazy motorcycle"}


def _blobs(rng: np.random.Generator, shape, n: int, sigma_range=(2.0, 5.0)) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros(shape, np.float32)
    for _ in range(n):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(*sigma_range)
        out += rng.uniform(0.4, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return out


def fluorescence_timelapse(n_frames: int = 8, size: int = 192, seed: int = 0,
                           photons: float = 200.0) -> dict[str, Any]:
    """A synthetic widefield time-lapse (TYX, uint16) with out-of-focus haze and shot noise.

    Nuclei-like blobs and filaments drift slowly; a thick, out-of-focus region veils part of the field
    (haze model with a smooth transmission and a bright background level), then Poisson noise at
    ``photons`` per unit intensity. ``clean`` holds the haze- and noise-free frames.
    """
    rng = np.random.default_rng(seed)
    pad = 16
    big = (size + 2 * pad, size + 2 * pad)
    nuclei = _blobs(rng, big, 40, (3.0, 7.0))
    lines = np.zeros(big, np.float32)
    for _ in range(14):
        y0, x0 = rng.uniform(0, big[0]), rng.uniform(0, big[1])
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(40, 140)
        ts = np.linspace(-length / 2, length / 2, int(length * 2))
        ys = np.clip((y0 + ts * np.sin(ang)).astype(int), 0, big[0] - 1)
        xs = np.clip((x0 + ts * np.cos(ang)).astype(int), 0, big[1] - 1)
        lines[ys, xs] = rng.uniform(0.5, 1.0)
    lines = ndi.gaussian_filter(lines, 1.0) * 4
    scene = np.clip(nuclei + lines, 0, None)
    scene = 0.05 + 0.9 * scene / scene.max()

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    thick = np.exp(-((yy - 0.35) ** 2 + (xx - 0.65) ** 2) / 0.08)
    t = (1.0 - 0.7 * thick).astype(np.float32)
    airlight = 0.7
    clean = np.empty((n_frames, size, size), np.float32)
    hazy = np.empty_like(clean)
    for k in range(n_frames):
        dy, dx = 0.8 * k, 0.5 * k
        frame = ndi.shift(scene, (dy, dx), order=1, mode="nearest")[pad:pad + size, pad:pad + size]
        clean[k] = frame
        hazy[k] = haze(frame, t, airlight)
    noisy = rng.poisson(hazy * photons).astype(np.float32) / photons
    img = np.clip(np.rint(noisy * 3000 + 100), 0, 65535).astype(np.uint16)
    return {"image": img, "axes": "TYX", "clean": clean, "transmission": t,
            "airlight": np.float32(airlight), "name": "hazy fluorescence time-lapse"}


def cells(size: int = 128, seed: int = 0) -> np.ndarray:
    """A clean synthetic fluorescence field in [0, 1]: nuclei-like blobs and thin filaments."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    nuclei = _blobs(rng, shape, max(4, size * size // 900), (size / 40, size / 14))
    lines = np.zeros(shape, np.float32)
    for _ in range(max(3, size // 16)):
        y0, x0 = rng.uniform(0, size, 2)
        ang = rng.uniform(0, np.pi)
        ts = np.linspace(-size / 2, size / 2, size * 2)
        ys = np.clip((y0 + ts * np.sin(ang)).astype(int), 0, size - 1)
        xs = np.clip((x0 + ts * np.cos(ang)).astype(int), 0, size - 1)
        lines[ys, xs] = rng.uniform(0.4, 0.9)
    img = np.clip(nuclei, 0, None) + ndi.gaussian_filter(lines, 0.8) * 3
    img = ndi.gaussian_filter(img, 0.7)
    return (0.05 + 0.9 * img / img.max()).astype(np.float32)


def dead_leaves(size: int = 256, seed: int = 0, r_min: float = 1.5, r_max: float | None = None,
                alpha: float = 3.0, textured: bool = True) -> np.ndarray:
    """A dead-leaves image in [0, 1]: occluding random shapes with scale-invariant sizes.

    Leaves (discs and ellipses) fall one after another and each hides what lies under it; painted
    front to back, a leaf only fills pixels no earlier leaf covers, until the image is covered.
    Radii follow a power law ``p(r) ∝ r^-alpha`` on ``[r_min, r_max]`` (``alpha`` = 3 gives the
    scale invariance of natural images). ``textured``: each leaf carries a random linear gradient
    or sinusoid on its grey level, and a random fraction of images is blurred (depth of field), as
    in the textured variants of Achddou, Gousseau & Ladjal (Synthetic images as a regularity prior
    for image restoration neural networks, SSVM 2021), who report that denoisers trained on such
    images come close to those trained on natural photographs. A training source of
    ``scripts/train_denoiser.py --dead-leaves``.
    """
    rng = np.random.default_rng(seed)
    r_max = size / 3 if r_max is None else r_max
    img = np.zeros((size, size), np.float32)
    empty = np.ones((size, size), bool)
    a, b = r_min ** (1 - alpha), r_max ** (1 - alpha)
    left = size * size
    for _ in range(200_000):  # a bound only: the loop ends once every pixel is covered
        r = (a + rng.random() * (b - a)) ** (1 / (1 - alpha))
        cy, cx = rng.uniform(-r, size + r, 2)
        aspect = rng.uniform(0.4, 1.0) if rng.random() < 0.5 else 1.0  # ellipse or disc
        theta = rng.uniform(0, np.pi)
        y0, y1 = max(0, int(cy - r)), min(size, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r)), min(size, int(cx + r) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dy * np.cos(theta) + dx * np.sin(theta)
        v = -dy * np.sin(theta) + dx * np.cos(theta)
        inside = ((u / r) ** 2 + (v / (aspect * r)) ** 2 <= 1.0) & empty[y0:y1, x0:x1]
        if not inside.any():
            continue
        grey = np.full(inside.shape, rng.random(), np.float32)
        if textured and rng.random() < 0.5:
            if rng.random() < 0.5:  # a gradient across the leaf
                grey += rng.uniform(-0.5, 0.5) * (u / r)
            else:  # a sinusoid, period 3 px .. the leaf's size
                period = rng.uniform(3.0, max(3.5, 2 * r))
                phi = rng.uniform(0, np.pi)
                grey += rng.uniform(0.05, 0.3) * np.sin(
                    2 * np.pi * (u * np.cos(phi) + v * np.sin(phi)) / period)
        img[y0:y1, x0:x1][inside] = grey[inside]
        empty[y0:y1, x0:x1] &= ~inside
        left -= int(inside.sum())
        if left <= 0:
            break
    img[empty] = rng.random()
    if textured and rng.random() < 0.3:
        img = ndi.gaussian_filter(img, rng.uniform(0.5, 1.5))
    lo, hi = np.percentile(img, (0.5, 99.5))
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)


def microscopy_field(size: int = 256, seed: int = 0) -> np.ndarray:
    """A clean fluorescence-like field in [0, 1], richer than :func:`cells`: curved filaments of
    varying brightness and width, textured nuclei, diffraction-limited puncta and a smooth
    background, blurred by a Gaussian PSF of random width (0.7-2 px) and given a random dynamic
    range. A training source of ``scripts/train_denoiser.py --fields``."""
    rng = np.random.default_rng(seed)
    shape = (size, size)
    img = np.zeros(shape, np.float32)
    if rng.random() < 0.7:  # filaments: smooth random walks, splatted at sub-pixel steps
        for _ in range(int(rng.integers(3, max(4, size // 8)))):
            n = int(rng.integers(size // 2, 3 * size))
            turn = np.cumsum(rng.normal(0, rng.uniform(0.01, 0.08), n))
            ang = rng.uniform(0, 2 * np.pi) + turn
            ys = rng.uniform(0, size) + np.cumsum(0.5 * np.sin(ang))
            xs = rng.uniform(0, size) + np.cumsum(0.5 * np.cos(ang))
            ok = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
            np.add.at(img, (ys[ok].astype(int), xs[ok].astype(int)), rng.uniform(0.2, 1.0))
        img = ndi.gaussian_filter(img, rng.uniform(0.3, 1.0))
    if rng.random() < 0.6:  # nuclei with internal texture
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        texture = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2.0)
        texture = 1 + 2 * texture / max(float(np.abs(texture).max()), 1e-6)
        for _ in range(int(rng.integers(1, max(2, size * size // 3000)))):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(size / 30, size / 8, 2)
            theta = rng.uniform(0, np.pi)
            u = (yy - cy) * np.cos(theta) + (xx - cx) * np.sin(theta)
            v = -(yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
            inside = (u / ry) ** 2 + (v / rx) ** 2 <= 1
            img[inside] += rng.uniform(0.2, 0.6) * texture[inside]
    if rng.random() < 0.6:  # puncta
        n = int(rng.integers(5, max(6, size * size // 400)))
        dots = np.zeros(shape, np.float32)
        dots[rng.integers(0, size, n), rng.integers(0, size, n)] = rng.uniform(2, 8, n)
        img += ndi.gaussian_filter(dots, rng.uniform(0.6, 1.2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    img += rng.uniform(0, 0.2) * (1 + np.sin(2 * np.pi * (rng.uniform(0.2, 1) * yy
                                                          + rng.uniform(0.2, 1) * xx)))
    img = ndi.gaussian_filter(np.clip(img, 0, None), rng.uniform(0.7, 2.0))
    img = img / max(float(np.percentile(img, 99.9)), 1e-6)
    img = np.clip(img, 0, 1) ** rng.uniform(0.7, 1.3)  # dynamic range, as display or camera set it
    lo = rng.uniform(0.0, 0.15)
    return (lo + rng.uniform(0.5, 1.0 - lo) * img).astype(np.float32)


def noisy_cells(size: int = 128, sigma: float = 0.1, seed: int = 0) -> dict[str, Any]:
    """Synthetic fluorescence field plus Gaussian noise of std ``sigma`` (image range [0, 1])."""
    clean = cells(size, seed)
    rng = np.random.default_rng(seed + 1)
    noisy = (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)
    return {"image": noisy, "axes": "YX", "clean": clean, "name": f"noisy cells (sigma={sigma})"}


def blurred_cells(size: int = 192, sigma_psf: float = 2.0, examples: int = 4,
                  seed: int = 0) -> dict[str, Any]:
    """A widefield-like acquisition and *unpaired* clean examples, for the physics-based GAN.

    ``image``: a synthetic fluorescence field blurred by a Gaussian PSF of ``sigma_psf`` pixels with
    Poisson-Gaussian noise (about 200 photons at full scale, read noise 0.01), uint16. ``clean``: a
    ``(examples, size, size)`` stack of *other* clean fields (what a few confocal images of similar
    samples would give), uint16. ``truth`` is the field before blurring (for scoring only).
    """
    truth = cells(size, seed)
    from .physics.operators import gaussian_psf

    blurred = ndi.convolve(truth, gaussian_psf(sigma_psf), mode="reflect")
    noisy = add_noise(blurred, 0.01, poisson=200, seed=seed + 1)
    clean = np.stack([cells(size, seed + 100 + k) for k in range(examples)])
    return {"image": _to16(noisy), "axes": "YX", "clean": _to16(clean), "truth": truth,
            "psf_sigma": sigma_psf, "name": "blurred cells"}


def _to16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 4000 + 100), 0, 65535).astype(np.uint16)


def hazy_fields(n: int = 4, size: int = 192, examples: int = 4, photons: float = 300.0,
                seed: int = 0) -> dict[str, Any]:
    """Hazy widefield fields and *unpaired* clear examples, for Cycle-Dehaze.

    ``image``: ``(n, size, size)`` synthetic fluorescence fields (:func:`cells`), each veiled by its
    own out-of-focus haze (``I = J t + A (1 - t)``, ``t`` a smooth random map between about 0.3 and
    0.9, ``A`` between 0.5 and 0.8) with Poisson noise at ``photons`` per unit intensity, uint16;
    ``clean``: ``(examples, size, size)`` clear fields of *other* samples (what confocal images of
    similar samples would give), uint16; ``truth``: the fields before haze (for scoring only).
    """
    rng = np.random.default_rng(seed)
    truth = np.stack([cells(size, seed + k) for k in range(n)])
    hazy = np.empty_like(truth)
    for k in range(n):
        t = ndi.gaussian_filter(rng.standard_normal((size, size)), size / 6, mode="wrap")
        t = 0.3 + 0.6 * (t - t.min()) / max(float(np.ptp(t)), 1e-6)
        hazy[k] = haze(truth[k], t.astype(np.float32), rng.uniform(0.5, 0.8))
    noisy = rng.poisson(np.clip(hazy, 0, None) * photons).astype(np.float32) / photons
    clean = np.stack([cells(size, seed + 1000 + k) for k in range(examples)])
    return {"image": _to16(noisy), "axes": "ZYX" if n > 1 else "YX", "clean": _to16(clean),
            "truth": truth, "name": "hazy widefield fields"}


def random_blur(rng: np.random.Generator, kind: str | None = None) -> tuple[str, np.ndarray]:
    """A normalised blur kernel of a random kind: ``"gaussian"`` (std 1.5-3 px), ``"motion"`` (a
    line of 5-11 px at a random angle, slightly smoothed) or ``"defocus"`` (a disc of radius
    2-4 px). Returns ``(kind, kernel)``."""
    kind = kind or str(rng.choice(["gaussian", "motion", "defocus"]))
    r = 7
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    if kind == "gaussian":
        s = rng.uniform(1.5, 3.0)
        k = np.exp(-(yy ** 2 + xx ** 2) / (2 * s * s))
    elif kind == "motion":
        length, ang = rng.uniform(5, 11), rng.uniform(0, np.pi)
        along = xx * np.cos(ang) + yy * np.sin(ang)
        across = -xx * np.sin(ang) + yy * np.cos(ang)
        k = ((np.abs(along) <= length / 2) & (np.abs(across) <= 0.5)).astype(np.float32)
        k = ndi.gaussian_filter(k, 0.5)
    elif kind == "defocus":
        k = ((yy ** 2 + xx ** 2) <= rng.uniform(2, 4) ** 2).astype(np.float32)
        k = ndi.gaussian_filter(k, 0.5)
    else:
        raise ValueError(f"blur kind must be gaussian, motion or defocus; got {kind!r}")
    return kind, (k / k.sum()).astype(np.float32)


def blurred_fields(n: int = 4, size: int = 192, examples: int = 4, seed: int = 0,
                   kinds=None) -> dict[str, Any]:
    """Fields blurred by unknown, varying blurs and *unpaired* sharp examples, for disentangled
    deblurring.

    ``image``: ``(n, size, size)`` synthetic fluorescence fields, each blurred by its own random
    kernel (:func:`random_blur`; ``kinds`` fixes them) with Poisson-Gaussian noise (about 300
    photons at full scale, read noise 0.01), uint16; ``clean``: ``(examples, size, size)`` sharp
    fields of other samples, uint16; ``truth`` and ``blurs`` (the kinds) for scoring.
    """
    truth = np.stack([cells(size, seed + k) for k in range(n)])
    image, names = blur_at_random(truth, seed, kinds)
    clean = np.stack([cells(size, seed + 1000 + k) for k in range(examples)])
    return {"image": image, "axes": "ZYX" if n > 1 else "YX", "clean": _to16(clean),
            "truth": truth, "blurs": names, "name": "blurred fields (varying blur)"}


def blur_at_random(truth: np.ndarray, seed: int, kinds=None) -> tuple[np.ndarray, list[str]]:
    """Each ``[0, 1]`` plane of ``truth`` ``(n, H, W)`` blurred by its own :func:`random_blur`
    kernel (drawn with ``seed``; ``kinds`` fixes them), with Poisson-Gaussian noise (about 300
    photons at full scale, read noise 0.01), in the samples' uint16 units. Returns ``(image,
    kinds)``."""
    rng = np.random.default_rng(seed)
    blurred, names = np.empty_like(truth), []
    for k in range(len(truth)):
        name, kernel = random_blur(rng, None if kinds is None else kinds[k % len(kinds)])
        blurred[k] = ndi.convolve(truth[k], kernel, mode="reflect")
        names.append(name)
    return _to16(add_noise(blurred, 0.01, poisson=300, seed=seed + 1)), names


def noisy_pair(size: int = 256, sigma: float = 0.15, seed: int = 0,
               poisson: float | None = None) -> dict[str, Any]:
    """Two independent noisy acquisitions of one synthetic fluorescence field (``image``, ``target``).

    Gaussian noise of std ``sigma``, or, with ``poisson`` photons per unit intensity, Poisson shot
    noise plus Gaussian read noise of std ``sigma`` (Poisson-Gaussian, as on a camera).
    """
    clean = cells(size, seed)
    rng = np.random.default_rng(seed + 7)

    def acquire() -> np.ndarray:
        x = clean if poisson is None else rng.poisson(clean * poisson) / poisson
        return (x + sigma * rng.standard_normal(clean.shape)).astype(np.float32)

    return {"image": acquire(), "target": acquire(), "axes": "YX", "clean": clean,
            "name": f"noisy pair (sigma={sigma}{'' if poisson is None else f', {poisson} photons'})"}


def moving_scene(n_frames: int = 8, size: int = 128, source: str = "cells", seed: int = 0,
                 speed: float = 1.0) -> np.ndarray:
    """A clean ``(T, size, size)`` float32 video in [0, 1]: a crop drifting over a larger scene.

    ``source`` is ``"cells"`` (a synthetic fluorescence field) or the name of a grey image bundled
    with scikit-image (``"camera"``, ``"coins"``, ``"moon"``, ``"cell"``: the images the shipped
    denoiser was *not* trained on). The crop moves along a smooth random path (about ``speed`` pixels
    per frame) and turns slowly, so the optical flow between frames is sub-pixel and not a pure shift.
    """
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    big = int(size * 1.6 + 8 * n_frames * speed)
    if source == "cells":
        scene = cells(big, seed=seed)
    else:
        img = getattr(skdata, source)()
        if img.ndim == 3:
            img = img.mean(axis=-1)
        img = img.astype(np.float32) / 255.0
        if min(img.shape) < big:
            img = ndi.zoom(img, big / min(img.shape) + 1e-3, order=3)
        scene = np.clip(img, 0, 1)
    h, w = scene.shape
    heading = rng.uniform(0, 2 * np.pi)
    cy, cx = h / 2, w / 2
    out = np.empty((n_frames, size, size), np.float32)
    for k in range(n_frames):
        heading += rng.normal(0, 0.3)
        cy += speed * np.sin(heading)
        cx += speed * np.cos(heading)
        a = 0.01 * k  # a slow turn: 0.6 degrees per frame
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        centre = np.array([size / 2, size / 2])
        offset = np.array([cy, cx]) - rot @ centre
        out[k] = ndi.affine_transform(scene, rot, offset=offset, output_shape=(size, size),
                                      order=3, mode="reflect")
    return np.clip(out, 0, 1)


def add_noise(clean: np.ndarray, sigma: float, *, poisson: float | None = None,
              correlation: float = 0.0, seed: int = 0) -> np.ndarray:
    """Noisy copy of a clean ``[0, 1]`` image or video (float32).

    Additive Gaussian noise of std ``sigma``; with ``poisson`` photons per unit intensity, Poisson
    shot noise first (Poisson-Gaussian); with ``correlation`` > 0, the Gaussian part is spatially
    correlated (white noise blurred by a Gaussian of that std in pixels, rescaled to std ``sigma``),
    as from a camera's demosaicing or an EMCCD's charge spreading.
    """
    rng = np.random.default_rng(seed)
    x = clean.astype(np.float32)
    if poisson is not None:
        x = (rng.poisson(np.clip(x, 0, None) * poisson) / poisson).astype(np.float32)
    n = rng.standard_normal(clean.shape).astype(np.float32)
    if correlation > 0:
        s = (0,) * (clean.ndim - 2) + (correlation, correlation)
        n = ndi.gaussian_filter(n, s, mode="wrap")
        n /= n.std()
    return (x + sigma * n).astype(np.float32)


def noisy_video(n_frames: int = 8, size: int = 128, sigma: float = 25 / 255,
                source: str = "cells", poisson: float | None = None, correlation: float = 0.0,
                seed: int = 0) -> dict[str, Any]:
    """A noisy time-lapse (``TYX`` float32) with its clean frames; see :func:`moving_scene` and
    :func:`add_noise`."""
    clean = moving_scene(n_frames, size, source, seed)
    noisy = add_noise(clean, sigma, poisson=poisson, correlation=correlation, seed=seed + 1)
    kind = f"sigma={sigma * 255:.0f}/255" + ("" if poisson is None else f", {poisson:g} photons") \
        + ("" if not correlation else f", correlated {correlation:g} px")
    return {"image": noisy, "axes": "TYX", "clean": clean, "name": f"noisy {source} video ({kind})"}
