"""Training through a known forward operator ``H`` (a PSF blur, a downsampling, a haze model:
:mod:`napari_ssl_restore.physics.operators`), for the unpaired methods that have one.

A physics term ``L1(H(G(y)), y)`` on a training crop is scored where ``H(G(y))`` sees ``G(y)``
(:func:`interior`); clean examples enter in the units the physics term gives ``G(y)``
(:func:`in_input_units`); the input's noise (:func:`input_noise`) degrades them into synthetic
pairs, and sets the residual to aim at without a truth (:func:`noise_floor`: the discrepancy
principle); a haze model is estimated on the input itself (:func:`input_haze`). Data the user may
add: registered training pairs, mapped to those units (:func:`training_pairs`), and a paired QC
image that chooses the checkpoint (:func:`qc_pair`, scored by :func:`qc_error`).
"""
from __future__ import annotations

import numpy as np

DISCREPANCY = 1.05
"""Morozov's τ: without a truth (no QC pair, no synthetic pairs) the checkpoint kept is the one
whose physics residual is nearest τ times the input's estimated noise (its mean absolute value).
The lowest residual would keep the estimate that fits the noise too (measured: deconvolution with
the physics term alone falls from 25.8 to 19.9 dB as its residual sinks below the noise); Morozov's
rule asks τ > 1, and 1.05 was chosen on the physics-GAN benchmark's first field."""

QC_SIDE = 256
"""Largest side (input pixels) of the QC pair scored at each check (centre crop)."""


def interior(x, margin: tuple[int, int], zoom: int = 1):
    """``x`` without ``margin`` (rows, columns; times ``zoom`` on an upsampled grid) at each
    border, at most a quarter of each side: the physics term is scored where ``H(G(y))`` sees
    ``G(y)`` and not the operator's padding of a small crop (a 64² crop blurred by a σ = 2 PSF is
    padded over a third of its pixels)."""
    h, w = x.shape[-2:]
    my, mx = (min(m * zoom, side // 4) for m, side in zip(margin, (h, w), strict=False))
    return x[..., my:h - my, mx:w - mx]


def input_haze(planes, device, patch: int, radius: int | None = None):
    """The input's haze as the Dark Channel Prior estimates it
    (:class:`~napari_ssl_restore.physics.operators.HazeOperator`): the airlight pooled over four
    planes spread over the stack, read where the input's physical zero lies in the planes' units."""
    from ..physics.operators import HazeOperator
    from .train import spread

    return HazeOperator([planes[i] for i in spread(len(planes), 4)], device, patch, radius,
                        zero=planes.scaling.zero)


def input_noise(degraded):
    """The input's noise (:func:`~napari_ssl_restore.physics.noise.noise_of_image`) from at most
    four of its training planes (``(N, C, H, W)`` on the device), in the normalised units training
    uses."""
    from ..physics.noise import noise_of_image

    picks = degraded[:: max(1, len(degraded) // 4)][:4]
    return noise_of_image(picks.permute(0, 2, 3, 1).cpu().numpy())


def noise_floor(noise, crops, margin: tuple[int, int]) -> float:
    """The physics residual the discrepancy principle aims at on ``crops`` (``(N, C, H, W)``,
    within ``margin``): :data:`DISCREPANCY` times the mean absolute value of the input's ``noise``
    (:func:`input_noise`) there."""
    import torch

    with torch.inference_mode():
        return DISCREPANCY * float(interior(noise.mean_abs(crops), margin).mean())


def in_input_units(examples, operator, *maps):
    """Clean examples rescaled so that *degraded* they span what the input spans: the input is
    normalised by its percentiles, and a blur lowers peaks, so clean examples normalised by their
    own percentiles would be dimmer at their peaks than the sharp image the physics term asks for,
    and the two terms would pull against each other. Percentiles (0.1, 99.9) of ``H(examples)``
    map to 0 and 1, like the input's (dehazing: under the median transmission of the input's
    ``maps``)."""
    import torch

    with torch.inference_mode():
        typical = [m.median() for m in maps]
        degraded = torch.cat([operator(examples[k:k + 8], *typical)
                              for k in range(0, len(examples), 8)])
        flat = degraded.flatten()[:: max(1, degraded.numel() // 2**22)].float()
        lo, hi = torch.quantile(flat, torch.tensor([0.001, 0.999], device=flat.device)).tolist()
    return (examples - lo) / max(hi - lo, 1e-6)


def residual_map(operator, plane: np.ndarray, source: np.ndarray, device, *, maps=(),
                 zoom: int = 1) -> np.ndarray:
    """``|H(x) - y|`` of a restored ``(H, W, C)`` plane ``x`` and its source ``y``, mean over
    channels (``maps``: ``H``'s per-plane maps, ``(H, W, K)`` arrays), on the output's grid
    (``zoom``: each source pixel repeated), so that the two overlay."""
    import torch

    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None].to(device)
        y = torch.from_numpy(np.ascontiguousarray(source.transpose(2, 0, 1)))[None]
        maps = tuple(torch.from_numpy(m.transpose(2, 0, 1))[None].to(device) for m in maps)
        r = (operator(x, *maps).cpu() - y).abs().mean(1)[0].numpy()
    if zoom > 1:
        r = np.repeat(np.repeat(r, zoom, axis=0), zoom, axis=1)
    return r


def qc_pair(qc_input, qc_truth, channels: int, zoom: int, ctx, device, *, title: str):
    """The paired QC image (``qc_input``: a degraded acquisition in the input's units;
    ``qc_truth``: its clean counterpart, any units, ``zoom`` times larger for super-resolution) as
    device tensors, centre-cropped to ``QC_SIDE``; ``None`` when not given. Errors (starting with
    ``title``) name the mismatch."""
    import torch

    if qc_input is None and qc_truth is None:
        return None
    if qc_input is None or qc_truth is None:
        raise ValueError(f"{title}: a QC pair needs both qc_input= (a degraded image) and "
                         "qc_truth= (the same field, clean); give both or neither.")
    pair = []
    for name, arr in (("qc_input", qc_input), ("qc_truth", qc_truth)):
        arr = np.asarray(arr, np.float32)
        arr = arr[..., None] if arr.ndim == 2 else arr
        if arr.ndim != 3 or arr.shape[-1] != channels:
            raise ValueError(f"{title}: {name} must be one plane (Y, X) with the image's "
                             f"{channels} channel(s) last; got shape {arr.shape}.")
        pair.append(arr)
    (h, w), (th, tw) = pair[0].shape[:2], pair[1].shape[:2]
    if (th, tw) != (h * zoom, w * zoom):
        raise ValueError(f"{title}: qc_truth is {th}x{tw} but must be qc_input's {h}x{w} "
                         f"times {zoom} (the same field, registered).")
    s = min(QC_SIDE, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    degraded = (pair[0][y0:y0 + s, x0:x0 + s] - ctx.offset) / ctx.scale
    truth = pair[1][y0 * zoom:(y0 + s) * zoom, x0 * zoom:(x0 + s) * zoom]
    return tuple(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(device)
                 for a in (degraded, truth))


def training_pairs(pairs_input, pairs_truth, channels: int, patch: int, operator, ctx, device,
                   rng, *, augment, title: str):
    """The user's registered training pairs as a sampler of aligned ``(a, b)`` crops of ``patch``
    pixels on the device (``None`` when not given): ``a`` acquired like the image, in its
    normalised units; ``b`` the clean counterpart, any units, mapped by the gain and offset that
    best fit ``H(b)`` to ``a`` (``H`` is linear and keeps constants, so ``H`` of the mapped ``b``
    then matches ``a``: the units the physics term gives ``G(y)``). Errors (starting with
    ``title``) name what is missing or mismatched."""
    import torch

    from .train import PatchSampler, to_device

    if pairs_input is None and pairs_truth is None:
        return None
    if pairs_input is None or pairs_truth is None:
        raise ValueError(f"{title}: training pairs need both pairs_input= (degraded images) "
                         "and pairs_truth= (the same fields, clean, registered); give both or "
                         "neither.")

    def planes(v):  # (N, Y, X, C), or None when the shape does not fit the image's channels
        v = np.asarray(v, np.float32)
        if channels == 1 and v.ndim in (2, 3):
            return v.reshape((-1,) + v.shape[-2:] + (1,))
        if channels > 1 and v.ndim in (3, 4) and v.shape[-1] == channels:
            return v.reshape((-1,) + v.shape[-3:])
        return None

    a, b = planes(pairs_input), planes(pairs_truth)
    if a is None or b is None or a.shape != b.shape or min(a.shape[1:3]) < patch:
        raise ValueError(f"{title}: pairs_input {np.shape(pairs_input)} and pairs_truth "
                         f"{np.shape(pairs_truth)} must be registered images or stacks of them "
                         f"of the same shape, with the image's {channels} channel(s) last and "
                         f"each side at least patch_size ({patch}).")
    a, b = to_device((a - ctx.offset) / ctx.scale, device), to_device(b, device)
    with torch.no_grad():  # (not inference mode: the crops feed training)
        seen = torch.cat([operator(b[k:k + 1]) for k in range(len(b))])
        b = gain(seen - seen.mean(), a - a.mean()) * (b - seen.mean()) + a.mean()
    return PatchSampler([a, b], [[k, k] for k in range(len(a))], patch, rng, augment=augment)


def qc_error(estimate, truth):
    """Mean squared error of ``estimate`` against ``truth`` after the best gain and offset (the
    truth's units are its own), relative to the truth's variance: 0 is perfect, 1 is no better than
    a flat image."""
    e, t = estimate - estimate.mean(), truth - truth.mean()
    return ((gain(e, t) * e - t) ** 2).mean() / (t * t).mean().clamp_min(1e-12)


def gain(x, y):
    """The least-squares gain from ``x`` to ``y`` (both centred): ``argmin_g |g x - y|²``."""
    return (x * y).sum() / (x * x).sum().clamp_min(1e-12)
