"""Judging a restoration without ground truth.

* :func:`j_invariant_loss` — the self-supervised loss of Batson & Royer, "Noise2Self: Blind
  Denoising by Self-Supervision", ICML 2019 (the idea behind scikit-image's
  ``calibrate_denoiser``). A grid of pixels (one in ``stride²``) is hidden: each is replaced by the
  mean of its four neighbours, the denoiser runs on that image, and its output at the hidden pixels
  is compared with the noisy input there. The output at a hidden pixel cannot depend on that pixel's
  noise, so for noise independent between pixels and of zero mean the loss is the true mean squared
  error plus the noise variance: ``E‖f_J(x) − x‖² = E‖f_J(x) − y‖² + σ²``. Ranking denoisers by it
  ranks them by their error against the unknown clean image — up to the cost of hiding the pixel,
  which is the same for every candidate.

Pure numpy/scipy: the denoiser is any callable from a float array to one of the same shape.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage as ndi

DONUT = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], np.float64) / 4.0
"""Mean of the four neighbours, without the centre: what a hidden pixel is replaced by."""
STRIDE = 4
"""Spacing of the hidden grid (Batson & Royer use 4: 16 passes cover every pixel once)."""


def grid_offsets(stride: int = STRIDE, passes: int | None = None) -> list[tuple[int, int]]:
    """The ``(dy, dx)`` offsets of the hidden grids, ``stride²`` of them, or ``passes`` spread
    over them (a subset gives an unbiased estimate from fewer denoiser runs)."""
    every = [(dy, dx) for dy in range(stride) for dx in range(stride)]
    if passes is None or passes >= len(every):
        return every
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    # row i % stride, column shifted by (stride // 2 + 1) per row and 1 per round: the first
    # ``stride`` grids cover every row and every column once, all stride² cover every pixel once
    k = stride // 2 + 1
    return [(i % stride, (k * i + i // stride) % stride) for i in range(passes)]


def hide(noisy: np.ndarray, offset: tuple[int, int], stride: int = STRIDE) -> tuple[np.ndarray,
                                                                                    np.ndarray]:
    """``noisy`` with the grid at ``offset`` replaced by the mean of each pixel's four neighbours,
    and the boolean ``(H, W)`` grid. ``noisy`` is ``(H, W)`` or ``(H, W, C)``; it is not modified."""
    x = np.asarray(noisy, np.float64)
    mask = np.zeros(x.shape[:2], bool)
    mask[offset[0]::stride, offset[1]::stride] = True
    kernel = DONUT if x.ndim == 2 else DONUT[..., None]
    filled = ndi.correlate(x, kernel, mode="reflect")
    out = x.copy()
    out[mask] = filled[mask]
    return out, mask


def j_invariant_output(noisy: np.ndarray, denoise: Callable[[np.ndarray], np.ndarray], *,
                       stride: int = STRIDE, passes: int | None = None) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    """The J-invariant output ``f_J(x)`` on the hidden pixels and where it is defined.

    Returns ``(output, seen)``: ``output`` holds, at each pixel of the grids run, the denoiser's
    value when that pixel was hidden; ``seen`` is the ``(H, W)`` mask of those pixels (all of them
    when ``passes`` is ``None``).
    """
    x = np.asarray(noisy, np.float64)
    if x.ndim not in (2, 3) or min(x.shape[:2]) < 2 * stride:
        raise ValueError(f"j_invariant_output needs a 2-D plane (H, W[, C]) of at least "
                         f"{2 * stride} pixels a side; got shape {x.shape}")
    output = np.zeros_like(x)
    seen = np.zeros(x.shape[:2], bool)
    for offset in grid_offsets(stride, passes):
        hidden, mask = hide(x, offset, stride)
        result = np.asarray(denoise(hidden), np.float64)
        if result.shape != x.shape:
            raise ValueError(f"the denoiser returned shape {result.shape} for an input of shape "
                             f"{x.shape}; it must keep the shape")
        output[mask] = result[mask]
        seen |= mask
    return output, seen


def j_invariant_loss(noisy: np.ndarray, denoise: Callable[[np.ndarray], np.ndarray], *,
                     stride: int = STRIDE, passes: int | None = None) -> float:
    """Mean squared difference between the J-invariant output and the noisy input (Batson &
    Royer 2019): an estimate of the denoiser's MSE against the clean image plus the noise variance.

    Lower is better. ``passes`` runs the denoiser on that many of the ``stride²`` grids (spread
    evenly) instead of all of them, for expensive denoisers: the loss is then taken over those
    grids' pixels only, an unbiased estimate with more scatter.
    """
    x = np.asarray(noisy, np.float64)
    output, seen = j_invariant_output(x, denoise, stride=stride, passes=passes)
    return float(np.mean((output[seen] - x[seen]) ** 2))
