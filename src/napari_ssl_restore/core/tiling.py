"""Overlapping tiles with smooth blending, so network inference fits in memory at any image size."""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``."""
    if tile <= 0:
        raise ValueError(f"tile size must be positive; got {tile}.")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile); got overlap={overlap} for tile={tile}.")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def _ramp(n: int, overlap: int) -> np.ndarray:
    """1 in the middle, a linear ramp over ``overlap`` samples at both ends, never exactly 0."""
    w = np.ones(n, dtype=np.float32)
    if overlap > 0:
        r = (np.arange(min(overlap, n), dtype=np.float32) + 0.5) / overlap
        w[: r.size] = np.minimum(w[: r.size], r)
        w[n - r.size:] = np.minimum(w[n - r.size:], r[::-1])
    return w


def iter_tiles(shape: tuple[int, int], tile: int, overlap: int) -> Iterator[tuple[slice, slice]]:
    """Yield ``(y_slice, x_slice)`` for every tile of a ``(H, W)`` plane."""
    h, w = shape
    for y in tile_starts(h, tile, overlap):
        for x in tile_starts(w, tile, overlap):
            yield slice(y, min(y + tile, h)), slice(x, min(x + tile, w))


def predict_tiled(
    plane: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    tile: int = 512,
    overlap: int = 32,
    scale: int = 1,
    callback: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Apply ``fn`` to overlapping tiles of a ``(H, W, C)`` plane and blend the results.

    Parameters
    ----------
    plane : ndarray, shape (H, W, C)
        One image plane in canonical layout.
    fn : callable
        Maps a ``(h, w, C)`` tile to a ``(h*scale, w*scale, C_out)`` array.
    tile, overlap : int
        Tile edge and overlap in input pixels. Overlaps are blended with linear ramps, which removes
        the seams that a network's border effects would otherwise leave.
    scale : int
        Output/input size ratio (super-resolution); 1 otherwise.
    callback : callable, optional
        ``callback(done, total)`` after each tile.

    Returns
    -------
    ndarray, shape (H*scale, W*scale, C_out), float32
    """
    if plane.ndim != 3:
        raise ValueError(f"predict_tiled expects a (H, W, C) plane; got shape {plane.shape}.")
    h, w = plane.shape[:2]
    tiles = list(iter_tiles((h, w), tile, overlap))
    out = None
    weight = np.zeros((h * scale, w * scale, 1), dtype=np.float32)
    for i, (ys, xs) in enumerate(tiles):
        pred = np.asarray(fn(plane[ys, xs]), dtype=np.float32)
        th, tw = (ys.stop - ys.start) * scale, (xs.stop - xs.start) * scale
        if pred.shape[:2] != (th, tw):
            raise ValueError(f"fn returned shape {pred.shape[:2]} for a tile needing {(th, tw)}.")
        if out is None:
            out = np.zeros((h * scale, w * scale, pred.shape[2]), dtype=np.float32)
        win = np.outer(_ramp(th, overlap * scale), _ramp(tw, overlap * scale))[..., None]
        oy, ox = slice(ys.start * scale, ys.stop * scale), slice(xs.start * scale, xs.stop * scale)
        out[oy, ox] += pred * win
        weight[oy, ox] += win
        if callback is not None:
            callback(i + 1, len(tiles))
    out /= weight
    return out
