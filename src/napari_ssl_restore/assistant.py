"""The restore assistant: what an image is like and which methods to try, from the image alone.

:func:`analyse` reads a bounded sample — at most :data:`MAX_PLANES` planes, each cropped to at most
:data:`MAX_SIDE`² around its centre, straight from the array or file (a large stack is never read
whole) — and runs the estimators of :mod:`napari_ssl_restore.physics.estimate` on it. Qt-free; torch
is imported only for the motion of a time-lapse.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .core.progress import MethodGenerator, Step, drive
from .engine.planes import Source, open_array
from .physics import estimate as est

MAX_PLANES = 8
"""Planes read at most (evenly spread; for a time-lapse, up to four pairs of consecutive frames)."""
MAX_SIDE = 512
"""Side of the centre crop read from each plane."""
FLOW_SIDE = 256
"""Side of the centre crop on which motion is measured (TV-L1 on the CPU stays under a second)."""
MIN_SIDE = 16
"""Smallest plane analysed (two noise blocks plus the filter's border)."""
NOISY = 0.01
"""Noise std, as a fraction of the sample's 0.5–99.5 % intensity range, above which the image is
called noisy (2.5 grey levels of an 8-bit image)."""
HAZY = 0.25
"""Haze score above which dehazing is recommended: the dark channel's median is a quarter of the
airlight, where He et al. (2009) found haze-free patches' dark channel near zero."""
CLEAR_BLUR = 1.5
"""PSF sigma (px) from which a still image counts as blurred first and noisy second: deconvolution
is then recommended before denoising (Richardson-Lucy's discrepancy stop already respects the
noise). Narrower widths are within what a well-sampled, merely smooth field reads."""
SMALL_MOTION = 2.0
"""Median motion (px) under which temporal fusion of a pretrained denoiser is recommended first."""
SECONDS_PER_MPX = {"dcp": 0.5, "dncnn": 4.0, "dncnn-fusion": 12.0, "frame2frame": 60.0,
                   "noise2noise": 10.0, "dip": 3000.0, "richardson-lucy": 2.0,
                   "classic-denoise": 4.0}
"""Rough CPU seconds per megapixel (all planes, all channels) of each recommendation, used when
``measure=False`` or the Estimate probe cannot run one; a GPU is typically ten times faster for
the networks. Order-of-magnitude figures."""
SETUP_SECONDS = {"noise2noise": 120.0, "frame2frame": 60.0}
"""Rough fixed cost (training) on top of the per-megapixel figure."""


def _bad(msg: str) -> ValueError:
    return ValueError(msg)


def _open(data, axes: str | None, name: str) -> Source:
    from .api import guess_axes
    from .core.normalize import check_image

    arr, stated = open_array(data)
    if not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
        arr = check_image(arr)
    shape = tuple(arr.shape)
    if len(shape) < 2:
        raise _bad(f"{name} is {len(shape)}-D (shape {shape}); analyse needs an image of at least "
                   "2 dimensions (Y, X) — pass a 2-D image or a stack.")
    if int(np.prod(shape, dtype=np.int64)) == 0:
        raise _bad(f"{name} is empty (shape {shape}); pass an image that contains data.")
    source = Source(arr, axes or stated or guess_axes(shape))
    if min(source.hw) < MIN_SIDE:
        raise _bad(f"{name}'s planes are {source.hw[0]}x{source.hw[1]} pixels; analyse needs at "
                   f"least {MIN_SIDE}x{MIN_SIDE} — pass the whole image, or check the axes.")
    return source


def _crop(source: Source) -> tuple[slice, slice]:
    h, w = source.hw
    ch, cw = min(h, MAX_SIDE), min(w, MAX_SIDE)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return slice(y0, y0 + ch), slice(x0, x0 + cw)


def _read(source: Source, i: int) -> np.ndarray:
    """Plane ``i`` of ``source``, centre-cropped, as float64 ``(H, W, C)``; only the crop is read."""
    axes = source.layout.axes
    index = list(source.index(i))
    ys, xs = _crop(source)
    index[axes.index("Y")], index[axes.index("X")] = ys, xs
    plane = np.asarray(source.array[tuple(index)])
    present = [a for a in axes if a in "YXC"]
    plane = np.transpose(plane, [present.index(a) for a in "YXC" if a in present])
    plane = plane if "C" in present else plane[..., None]
    return plane.astype(np.float64)


def _picks(source: Source) -> tuple[list[int], list[tuple[int, int]]]:
    """Plane indices to read and, for a time-lapse, the pairs of consecutive frames among them."""
    n_t = source.layout.size("T") if "T" in source.layout.axes else 1
    if n_t < 2:
        return source.sample_indices(MAX_PLANES), []
    n_z = source.n // n_t
    starts = sorted({int(round(t)) for t in np.linspace(0, n_t - 2, min(MAX_PLANES // 2, n_t - 1))})
    pairs = [(t * n_z + n_z // 2, (t + 1) * n_z + n_z // 2) for t in starts]
    return sorted({i for p in pairs for i in p}), pairs


def _motion(frames: dict[int, np.ndarray], pairs, lo: float, hi: float, device) -> float:
    import torch

    from .physics.flow import tvl1_pairs

    def gray(i: int) -> np.ndarray:
        g = frames[i].mean(axis=-1)
        h, w = g.shape
        s = min(FLOW_SIDE, h), min(FLOW_SIDE, w)
        g = g[(h - s[0]) // 2:(h - s[0]) // 2 + s[0], (w - s[1]) // 2:(w - s[1]) // 2 + s[1]]
        return np.clip((g - lo) / (hi - lo), 0, 1).astype(np.float32)

    dev = torch.device(device or "cpu")
    ref = torch.from_numpy(np.stack([gray(a) for a, _ in pairs])).to(dev)
    mov = torch.from_numpy(np.stack([gray(b) for _, b in pairs])).to(dev)
    flow = tvl1_pairs(ref, mov)
    return float(torch.median(torch.linalg.vector_norm(flow, dim=1)).cpu())


def _clipped(source: Source, values: np.ndarray) -> float:
    if source.dtype.kind in "iu":
        info = np.iinfo(source.dtype)
        lo, hi = float(info.min), float(info.max)
    else:
        lo, hi = float(values.min()), float(values.max())
    return float(np.mean((values <= lo) | (values >= hi)))


def _rec(method: str, params: dict, why: str, megapixels: float) -> dict:
    key = "dncnn-fusion" if method == "dncnn" and params.get("fusion_radius") else method
    seconds = SETUP_SECONDS.get(key, 0.0) + SECONDS_PER_MPX[key] * megapixels
    return {"method": method, "params": params, "why": why,
            "expected_seconds": float(round(seconds, 1 if seconds < 10 else None))}


def _recommend(r: dict, noisy: bool, megapixels: float, psf_given: bool) -> list[dict]:
    noise, recs = r["noise"], []
    pair, time = r["second"], r["time"]
    if noisy and pair and pair["registered"] and pair["independent_noise"]:
        recs.append(_rec("noise2noise", {}, "a second, registered acquisition with independent "
                         "noise: Noise2Noise learns the denoiser from the pair (pass target=the "
                         "second image).", megapixels))
    if noisy and time is not None:
        fusion = _rec("dncnn", {"fusion_radius": 2}, f"a noisy time-lapse with "
                      f"{time['motion_px']:.2g} px motion: a pretrained denoiser fused over ±2 "
                      "frames.", megapixels)
        f2f = _rec("frame2frame", {}, "a noisy time-lapse: Frame2Frame trains on the video itself "
                   "(flow-compensated neighbouring frames), so it learns this noise.", megapixels)
        small = time["motion_px"] < SMALL_MOTION and noise["model"] == "gaussian" \
            and not noise["correlated"]
        recs += [fusion, f2f] if small else [f2f, fusion]
    if noisy and time is None and not any(x["method"] == "dncnn" for x in recs):
        kind = f"noisy ({noise['model']}, sigma {noise['sigma']:.3g})" + (
            ", correlated — a pixel-wise denoiser may leave structure" if noise["correlated"]
            else "")
        recs.append(_rec("dncnn", {}, f"{kind}: the pretrained denoiser.", megapixels))
        recs.append(_rec("classic-denoise", {}, f"{kind}: non-local means, its strength "
                         "calibrated on this image (J-invariant loss).", megapixels))
    # denoising before deconvolution and dehazing, which both amplify noise
    if r["blur_sigma"] is not None:
        width = {} if psf_given else {"psf_sigma": round(r["blur_sigma"], 2)}
        blurred = f"blurred (Gaussian-equivalent PSF sigma {r['blur_sigma']:.2g} px)"
        given = " (pass psf= the measured PSF)" if psf_given else ""
        recs.append(_rec("richardson-lucy", dict(width), f"{blurred}: Richardson-Lucy "
                         f"deconvolution{given}, stopped when the residual reaches the noise "
                         "(discrepancy principle); a small fraction of DIP's time.", megapixels))
        recs.append(_rec("dip", {"task": "deconv", **width}, f"{blurred}: Deep Image Prior "
                         f"deconvolution{given}: minutes per plane, within a few tenths of a dB "
                         "of Richardson-Lucy on our held-out crops.", megapixels))
    deconv = [x for x in recs if x["method"] in ("richardson-lucy", "dip")]
    if deconv and r["blur_sigma"] >= CLEAR_BLUR and time is None \
            and not any(x["method"] == "noise2noise" for x in recs):
        recs = deconv + [x for x in recs if x not in deconv]
    if r["haze"]["score"] > HAZY:
        grey = len(np.ravel(r["haze"]["airlight"])) == 1
        recs.append(_rec("dcp", {}, f"hazy (score {r['haze']['score']:.2f}): dark channel prior "
                         "dehazing" + ("; on grey data the score does not tell a veil from a "
                                       "bright background (clean fields score 0.3-0.5 too): "
                                       "compare before trusting it." if grey else "."),
                         megapixels))
    return recs


def _summary(r: dict, noisy: bool, rel: float, shape) -> str:
    noise = r["noise"]
    parts = [f"{'noisy' if noisy else 'clean'} image of shape {tuple(shape)}: {noise['model']} "
             f"noise, sigma {noise['sigma']:.3g} ({100 * rel:.1f} % of the range)"
             + (", correlated" if noise["correlated"] else "")]
    parts.append("not blurred" if r["blur_sigma"] is None
                 else f"blurred (PSF sigma {r['blur_sigma']:.2g} px)")
    parts.append(f"haze score {r['haze']['score']:.2f}")
    if r["time"]:
        parts.append(f"motion {r['time']['motion_px']:.2g} px between frames")
    if r["second"]:
        parts.append("the second image is " + ("registered" if r["second"]["registered"] else
                                                "not registered") + " with "
                     + ("independent" if r["second"]["independent_noise"] else "shared") + " noise")
    if r["clipped"] > 0.01:
        parts.append(f"{100 * r['clipped']:.1f} % of pixels clipped")
    return "A " + ", ".join(parts) + "."


def analyse(data, axes: str | None = None, *, second=None, psf: npt.ArrayLike | None = None,
            device: str | None = None, seed: int = 0, measure: bool = True) -> dict[str, Any]:
    """Describe an image's degradations and recommend restoration methods, without ground truth.

    Reads at most :data:`MAX_PLANES` planes of at most :data:`MAX_SIDE`² (centre crops), so a
    large stack or file is never loaded whole.

    Parameters
    ----------
    data : array_like or path
        Image, stack or time-lapse (numpy, dask, zarr, TIFF/zarr path), as for ``restore``.
    axes : str, optional
        ``"YX"``, ``"TYX"``, ``"YXC"`` ...; guessed as ``restore`` does when omitted (a 3-D grey
        array is ``ZYX``: pass ``"TYX"`` for a time-lapse).
    second : array_like or path, optional
        A second acquisition of the same field (same shape), e.g. for Noise2Noise.
    psf : array_like, optional
        A measured PSF (2-D or ``(Z, Y, X)``); ``blur_sigma`` is then its lateral width.
    device : str, optional
        Torch device for the motion estimate of a time-lapse (default CPU).
    seed : int
        Seed of the runs behind the measurements (the timing probes, the scored denoisers).
    measure : bool
        Time each recommendation with the Estimate probe and score the still-image denoisers on
        a crop by the J-invariant loss (:mod:`napari_ssl_restore.ranking`; a few seconds on a
        CPU). ``False`` answers at once with rough figures (:data:`SECONDS_PER_MPX`).

    Returns
    -------
    dict (JSON-serialisable)
        ``noise``: ``model`` ("gaussian"/"poisson-gaussian"), ``a``, ``b`` (variance ``a·u + b``
        in the input's units), ``sigma`` (at the median intensity), ``correlated``, ``lag1`` (see
        :func:`~napari_ssl_restore.physics.estimate.noise_fit`, after Foi et al., IEEE TIP 2008);
        ``blur_sigma`` (px or None, :func:`~napari_ssl_restore.physics.estimate.blur_width`);
        ``haze`` (``score`` in [0, 1], ``airlight``); ``time`` (``motion_px``: median TV-L1 flow
        magnitude over up to four consecutive pairs, ``similarity``: median correlation of
        consecutive frames) or None; ``second`` (``registered``, ``independent_noise``,
        ``shift_px``, ``residual_correlation``) or None; ``clipped`` (fraction of sampled pixels at
        the integer dtype's limits, or at the float data's min/max); ``summary`` (one sentence);
        ``recommendations``: best first, ``{"method", "params", "why", "expected_seconds"}`` with
        ``params`` accepted by ``restore(data, method, axes=..., **params)`` (inputs such as
        ``target=`` are named in ``why``); ``expected_seconds`` is a rough CPU figure from the
        pixel count (:data:`SECONDS_PER_MPX`), not a measurement.

    Raises
    ------
    ValueError
        For an input that cannot be analysed (1-D, empty, planes under 16², NaN/inf, constant).
    """
    return drive(iter_analyse(data, axes, second=second, psf=psf, device=device, seed=seed,
                              measure=measure))


def iter_analyse(data, axes: str | None = None, *, second=None, psf: npt.ArrayLike | None = None,
                 device: str | None = None, seed: int = 0,
                 measure: bool = True) -> MethodGenerator:
    """:func:`analyse` as a generator: yields :class:`~napari_ssl_restore.core.progress.Step`
    events (one per plane read, one per estimator) and returns the same dict. The dock drives it
    in a worker (progress bar, Stop between steps); :func:`~napari_ssl_restore.core.progress.drive`
    runs it to the end."""
    source = _open(data, axes, "the image")
    picks, pairs = _picks(source)
    total = len(picks) + 4 + bool(pairs) + (second is not None)
    frames = {}
    for k, i in enumerate(picks, 1):
        frames[i] = _read(source, i)
        yield Step(k, total, f"read plane {k}/{len(picks)}")
    done = len(picks)
    values = np.stack(list(frames.values()))
    if not np.isfinite(values).any():
        raise _bad("the image is all NaN/inf; pass an image with finite values.")
    if not np.isfinite(values).all():
        raise _bad("the image contains NaN or inf values; replace them first "
                   "(e.g. np.nan_to_num(image)).")
    lo, hi = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    if values.max() == values.min():
        raise _bad(f"the image is constant (every sampled pixel is {values.flat[0]:g}); there is "
                   "nothing to analyse — check that it holds the acquisition.")
    if hi <= lo:
        lo, hi = float(values.min()), float(values.max())
    planes = [f[..., c] for f in frames.values() for c in range(f.shape[-1])]
    noise = est.noise_fit(planes)
    done += 1
    yield Step(done, total, f"noise: {noise['model']}, sigma {noise['sigma']:.3g}")
    if psf is not None:
        from .physics.operators import psf_widths

        p = np.asarray(psf, np.float64)
        blur: float | None = float(psf_widths(p if p.ndim == 3 else p[None])[0])
    else:
        blur = est.blur_width(planes, noise["sigma"] ** 2)
    done += 1
    yield Step(done, total, "blur: " + ("none" if blur is None else f"PSF sigma {blur:.2g} px"))
    first = next(iter(frames.values()))
    haze = est.haze_score(np.moveaxis(first / max(float(values.max()), 1e-12), -1, 0))
    done += 1
    yield Step(done, total, f"haze score {haze['score']:.2f}")
    time = None
    if pairs:
        time = {"motion_px": _motion(frames, pairs, lo, hi, device),
                "similarity": float(np.median([est.similarity(frames[a], frames[b])
                                               for a, b in pairs]))}
        done += 1
        yield Step(done, total, f"motion {time['motion_px']:.2g} px between frames")
    pair = None
    if second is not None:
        other = _open(second, source.layout.axes, "the second image")
        if tuple(other.layout.shape) != tuple(source.layout.shape):
            raise _bad(f"the second image has shape {tuple(other.layout.shape)} but the image has "
                       f"{tuple(source.layout.shape)}; pass another acquisition of the same field.")
        i = picks[0]
        pair = est.pair_stats(frames[i].mean(axis=-1), _read(other, i).mean(axis=-1))
        done += 1
        yield Step(done, total, "second image: " + ("registered" if pair["registered"]
                                                    else "not registered"))
    result: dict[str, Any] = {"noise": noise, "blur_sigma": blur, "haze": haze, "time": time,
                              "second": pair, "clipped": _clipped(source, values)}
    rel = noise["sigma"] / (hi - lo)
    noisy = rel > NOISY
    megapixels = float(np.prod(source.layout.shape, dtype=np.int64)) / 1e6
    result["summary"] = _summary(result, noisy, rel, source.layout.shape)
    recs = _recommend(result, noisy, megapixels, psf is not None)
    result["recommendations"] = recs
    if measure and recs:
        from . import ranking

        total = done + len(recs) + sum(r["method"] in ranking.RANKED for r in recs) + 1
        for sub in ranking.rank_denoisers(recs, frames[picks[len(picks) // 2]], noise,
                                          device=device, seed=seed):
            done += 1
            yield Step(done, total, sub.message)
        for sub in ranking.timed(recs, source.array, source.layout.axes, second=second,
                                 psf=psf, device=device, seed=seed):
            done += 1
            yield Step(done, total, sub.message)
    yield Step(total, total, f"{len(recs)} recommendation(s)")
    return result
