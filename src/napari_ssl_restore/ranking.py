"""The assistant's measurements on the user's own data: how long each recommendation takes, and
which denoiser does best, judged without ground truth.

* :func:`timed` — each recommendation's ``expected_seconds`` from the Estimate probe
  (:func:`napari_ssl_restore.estimate.seconds_per_plane`: the method runs for about a second on a
  crop of the first plane, through the same code, and its progress is scaled to the whole data).
* :func:`rank_denoisers` — the still-image denoisers among the recommendations (the pretrained
  DnCNN and the calibrated classical denoiser) scored on a centre crop by the J-invariant loss
  (Batson & Royer, ICML 2019; :mod:`napari_ssl_restore.engine.judge`, the hidden pixels topped up
  with fresh noise of the fitted ``a·u + b``) and put in its order. Methods
  that train on the data (Noise2Noise, the video methods, DIP) are not scored: a short run says
  little about a long one, and they are placed by what the data offers (a pair, a time-lapse).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .core.progress import Step

PROBE_SECONDS = 1.0
"""How long the Estimate probe runs each recommendation."""
RANK_SIDE = 192
"""Side of the centre crop on which denoisers are scored."""
RANK_PASSES = 4
"""Hidden grids per candidate (of 16): together they hide one pixel in every row and column of
each 4×4 block, so every part of the crop is scored; four denoiser runs per candidate."""
RANKED = ("dncnn", "classic-denoise")
"""Methods scored by the J-invariant loss (single-image denoisers with no training)."""


def timed(recs: list[dict], data, axes: str, *, second=None, psf=None,
          device: str | None = None, seed: int = 0):
    """Generator: fill each recommendation's ``expected_seconds`` from the Estimate probe (kept
    as the rough figure when the probe cannot run it). Yields one :class:`Step` per
    recommendation; returns nothing (``recs`` are updated)."""
    from .api import prepare
    from .estimate import seconds_per_plane

    for k, rec in enumerate(recs, 1):
        extras: dict[str, Any] = {}
        if rec["method"] == "noise2noise" and second is not None:
            extras["target"] = second
        if psf is not None and rec["params"].get("task", "deconv") == "deconv" \
                and rec["method"] in ("dip", "richardson-lucy"):
            extras["psf"] = psf
        try:
            job = prepare(data, rec["method"], axes=axes, device=device or "auto", seed=seed,
                          **extras, **rec["params"])
            per_plane = seconds_per_plane(job, PROBE_SECONDS)
        except (ValueError, TypeError):
            per_plane = math.nan
        if math.isfinite(per_plane):
            seconds = per_plane * len(job.planes)
            rec["expected_seconds"] = float(f"{seconds:.2g}") if seconds < 10 else float(
                round(seconds))
            rec["seconds_measured"] = True
        else:
            rec["seconds_measured"] = False
        yield Step(k, len(recs), f"timed {rec['method']}: ~{rec['expected_seconds']:g} s")


def _denoiser(method: str, params: dict, axes: str, device: str | None, seed: int):
    from .api import restore

    def run(x: np.ndarray) -> np.ndarray:
        arr = x if axes == "YXC" else x[..., 0]
        out = restore(arr, method, axes=axes, device=device or "auto", seed=seed, **params)
        return np.asarray(out, np.float64).reshape(x.shape)

    return run


def _scored_params(method: str, params: dict, crop: np.ndarray, axes: str,
                   device: str | None, seed: int) -> dict:
    """The settings to score: classic-denoise's strength is calibrated once on the crop (its own
    J-invariant search) and then held fixed, so scoring does not calibrate inside every pass."""
    if method != "classic-denoise":
        return dict(params)
    from .api import restore

    arr = crop if axes == "YXC" else crop[..., 0]
    res = restore(arr, method, axes=axes, device=device or "auto", seed=seed, full_output=True,
                  **params)
    strength = res["provenance"].get("strength")
    if strength is None:
        return dict(params)
    return {**params, "calibrate": False, "strength": float(np.ravel(strength)[0])}


def rank_denoisers(recs: list[dict], plane: np.ndarray, noise: dict, *,
                   device: str | None = None, seed: int = 0):
    """Generator: score the :data:`RANKED` recommendations on a centre crop of ``plane``
    (``(H, W, C)`` float, input units) by the J-invariant loss, and reorder them among their own
    places in ``recs`` (best first); each gets ``score = {"j_invariant_loss", "noise_variance"}``
    in the input's units² (loss − noise variance estimates the error against the clean image).
    Yields one :class:`Step` per candidate; returns nothing."""
    from .engine.judge import j_invariant_loss
    from .engine.predict import centre_crop

    slots = [i for i, r in enumerate(recs)
             if r["method"] in RANKED and not r["params"].get("fusion_radius")]
    if len(slots) < 2:
        return
    crop = centre_crop(plane, RANK_SIDE)
    axes = "YXC" if crop.shape[-1] > 1 else "YX"
    variance = float(max(noise["a"] * float(np.mean(crop)) + noise["b"], 0.0))
    scored = []
    for k, i in enumerate(slots, 1):
        rec = recs[i]
        params = _scored_params(rec["method"], rec["params"], crop, axes, device, seed)
        loss = j_invariant_loss(crop, _denoiser(rec["method"], params, axes, device, seed),
                                passes=RANK_PASSES, seed=seed,
                                noise_variance=lambda u: noise["a"] * u + noise["b"])
        rec["score"] = {"j_invariant_loss": loss, "noise_variance": variance}
        scored.append((loss, k, rec))
        yield Step(k, len(slots), f"scored {rec['method']}: J-invariant loss {loss:.3g}")
    for i, (_, _, rec) in zip(slots, sorted(scored, key=lambda s: (s[0], s[1])), strict=True):
        recs[i] = rec
