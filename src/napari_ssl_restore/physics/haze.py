"""Haze operators of the Dark Channel Prior (He, Sun & Tang, CVPR 2009 / TPAMI 2011), in numpy/scipy.

The haze model is ``I = J t + A (1 - t)``. The dark channel (per-pixel minimum over channels, then a
minimum filter over a patch) of the airlight-normalised image estimates the haze, ``t = 1 - omega *
dark(I / A)``; the airlight ``A`` is read off the most haze-opaque pixels; ``t`` is refined by a
(fast) guided filter with the grey image as guide (He, Sun & Tang, ECCV 2010; He & Sun 2015); and
``J = (I - A) / max(t, t0) + A``. Used by DCP dehazing and by the methods that build on DCP (the
Double-DIP dehazing prior). O(N) running filters (van Herk/Gil-Werman minimum, running-sum box) and
``argpartition`` for the airlight; within :func:`threads` large maps are split over two threads.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from scipy import ndimage as ndi

# Internally a plane is channel-first, (C, H, W): reductions over channels and per-channel arithmetic
# then run over contiguous memory, which is several times faster than over an interleaved last axis.

_POOL: contextvars.ContextVar = contextvars.ContextVar("haze_pool", default=None)


class _Inline:
    """Runs submitted work at once (no pool open): the same results, one core."""

    @staticmethod
    def submit(fn, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _pool():
    return _POOL.get() or _Inline()


@contextlib.contextmanager
def threads() -> Iterator[None]:
    """Within this block the filters split large maps over two threads (scipy's filters release
    the GIL); the pool is sized from the machine (one thread where there is one core) and shut
    down when the block ends."""
    workers = min(2, os.cpu_count() or 1)
    if workers < 2:
        yield
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="haze") as pool:
        token = _POOL.set(pool)
        try:
            yield
        finally:
            _POOL.reset(token)


def _min_filter(x: np.ndarray, size: int) -> np.ndarray:
    """``size²`` minimum filter of a ``(H, W)`` map (edges replicated), in two row strips on two
    threads when the map is large (scipy's filter releases the GIL; the strips overlap by the
    filter's reach, so the result is identical to one call)."""
    h = x.shape[0]
    if x.size < 250_000 or h < 4 * size:
        return ndi.minimum_filter(x, size=size, mode="nearest")
    mid, halo = h // 2, size
    top = _pool().submit(ndi.minimum_filter, x[: mid + halo], size, None, None, "nearest")
    bottom = ndi.minimum_filter(x[mid - halo:], size=size, mode="nearest")
    out = np.empty_like(x)
    out[:mid] = top.result()[:mid]
    out[mid:] = bottom[halo:]
    return out


def dark_channel(planar: np.ndarray, patch_size: int) -> np.ndarray:
    """Dark channel of a ``(C, H, W)`` plane: min over C, then a ``patch_size²`` minimum filter."""
    return _min_filter(np.minimum.reduce(planar, axis=0), patch_size)


def estimate_airlight(planar: np.ndarray, dark: np.ndarray, fraction: float,
                      estimator: str = "mean") -> np.ndarray:
    """Airlight ``A`` (shape ``(C,)``) from the ``fraction`` most haze-opaque pixels of ``dark``.

    ``planar`` is ``(C, ...)`` and ``dark`` its dark channel ``(...)``; several planes may be pooled
    (``(C, N, H, W)`` with ``(N, H, W)``). The top pixels are found with a coarse threshold from a
    subsample and an exact ``argpartition`` of the candidates (a full sort is not needed).
    """
    flat = dark.reshape(-1)
    n = max(int(flat.size * fraction), 1)
    idx = None
    if flat.size > 100_000:
        sub = flat[::53]
        k = min(sub.size - 1, 8 * max(int(sub.size * fraction), 1))
        cand = np.flatnonzero(flat >= np.partition(sub, sub.size - 1 - k)[sub.size - 1 - k])
        if cand.size >= n:
            idx = cand[np.argpartition(flat[cand], cand.size - n)[cand.size - n:]]
    if idx is None:
        idx = np.argpartition(flat, flat.size - n)[flat.size - n:]
    return _airlight_of(planar.reshape(planar.shape[0], -1)[:, idx], estimator)


def _airlight_of(pixels: np.ndarray, estimator: str) -> np.ndarray:
    """The airlight ``(C,)`` of the chosen most haze-opaque pixels ``(C, n)``: their mean, or the
    brightest of them (``estimator="brightest"``)."""
    if estimator == "brightest":
        return pixels[:, np.argmax(pixels.sum(axis=0))].astype(np.float32)
    return pixels.mean(axis=1, dtype=np.float64).astype(np.float32)


class AirlightPool:
    """The airlight of several planes together, one plane at a time: :meth:`add` keeps each
    plane's ``k`` most haze-opaque pixels (highest dark channel of ``patch``²), which hold the
    pool's ``k`` best, so memory does not grow with the number of planes; :meth:`airlight` pools
    them as :func:`estimate_airlight` does one plane."""

    def __init__(self, patch: int, k: int):
        self.patch, self.k = patch, max(int(k), 1)
        self._values: list[np.ndarray] = []
        self._pixels: list[np.ndarray] = []

    def add(self, planar: np.ndarray) -> None:
        """Candidates of one ``(C, H, W)`` plane."""
        flat = dark_channel(planar, self.patch).reshape(-1)
        k = min(self.k, flat.size)
        idx = np.argpartition(flat, flat.size - k)[flat.size - k:]
        self._values.append(flat[idx])
        self._pixels.append(planar.reshape(planar.shape[0], -1)[:, idx])

    def airlight(self, estimator: str = "mean") -> np.ndarray:
        """The airlight ``(C,)`` of the ``k`` candidates of highest dark channel (see
        :func:`_airlight_of` for ``estimator``)."""
        values, pixels = np.concatenate(self._values), np.concatenate(self._pixels, axis=1)
        n = min(self.k, values.size)
        return _airlight_of(pixels[:, np.argpartition(values, values.size - n)[values.size - n:]],
                            estimator)


def gray(planar: np.ndarray) -> np.ndarray:
    """Grey guide: ITU-R BT.601 luma for RGB(A), the channel itself for one channel, else the mean."""
    c = planar.shape[0]
    if c == 1:
        return planar[0]
    if c in (3, 4):
        g = planar[0] * np.float32(0.299)
        g += planar[1] * np.float32(0.587)
        g += planar[2] * np.float32(0.114)
        return g
    return planar.mean(axis=0, dtype=np.float32)


def _box_sum(x: np.ndarray, radius: int) -> np.ndarray:
    """Sum over a (2r+1)² window, zero outside the image (running sums: O(N) whatever r)."""
    size = 2 * radius + 1
    s = ndi.uniform_filter1d(x, size, axis=-1, mode="constant")
    return ndi.uniform_filter1d(s, size, axis=-2, mode="constant")


def _box_mean(shape: tuple[int, int], radius: int):
    """Mean over (2r+1)² windows clipped at the border (the normalisation of the authors' code,
    so borders are not biased by padding), as a function of a ``shape`` map."""
    size = 2 * radius + 1

    def counts(n: int) -> np.ndarray:
        i = np.arange(n)
        return (np.minimum(i + radius, n - 1) - np.maximum(i - radius, 0) + 1).astype(np.float32)

    norm = ((size * size) / np.outer(counts(shape[0]), counts(shape[1]))).astype(np.float32)

    def mean(x: np.ndarray) -> np.ndarray:
        s = _box_sum(x, radius)
        s *= norm
        return s

    return mean


def _guided_coefficients(guide: np.ndarray, src: np.ndarray, radius: int,
                         eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Box-averaged linear coefficients ``(mean_a, mean_b)`` of the guided filter, so that the
    output is ``mean_a * guide + mean_b``. The box filters run two at a time on two threads."""
    mean = _box_mean(guide.shape, radius)
    pool = _pool()
    f_i, f_p = pool.submit(mean, guide), pool.submit(mean, src)
    f_ip, f_ii = pool.submit(lambda: mean(guide * src)), pool.submit(lambda: mean(guide * guide))
    mean_i, mean_p = f_i.result(), f_p.result()
    a = f_ip.result() - mean_i * mean_p
    a /= f_ii.result() - mean_i * mean_i + np.float32(eps)
    b = mean_p - a * mean_i
    f_a, f_b = pool.submit(mean, a), pool.submit(mean, b)
    return f_a.result(), f_b.result()


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey-guide guided filter (He, Sun & Tang, ECCV 2010) of a ``(H, W)`` map."""
    mean_a, mean_b = _guided_coefficients(guide, src, radius, eps)
    q = mean_a * guide
    q += mean_b
    return q


def _upsample_linear(small: np.ndarray, shape: tuple[int, int], s: int) -> np.ndarray:
    """Bilinear upsampling of a map sampled at every ``s``-th pixel back to ``shape``."""
    def taps(n_out: int, n_in: int):
        pos = np.arange(n_out, dtype=np.float32) / s
        i0 = np.minimum(pos.astype(np.intp), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, np.clip(pos - i0, 0.0, 1.0).astype(np.float32)

    x0, x1, wx = taps(shape[1], small.shape[1])
    cols = small[:, x0] * (1.0 - wx) + small[:, x1] * wx  # cheap: still coarse in y
    y0, y1, wy = taps(shape[0], small.shape[0])
    out = cols[y0] * (1.0 - wy)[:, None]
    out += cols[y1] * wy[:, None]
    return out


def fast_guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float,
                       subsample: int) -> np.ndarray:
    """Fast guided filter (He & Sun 2015): coefficients on a grid ``subsample`` times coarser.

    ``a`` and ``b`` of the guided filter vary slowly, so they are computed on the subsampled maps
    with radius ``radius / subsample``, upsampled bilinearly, and applied to the full-resolution guide.
    """
    s = int(subsample)
    if s <= 1 or min(guide.shape) < 4 * s:
        return guided_filter(guide, src, radius, eps)
    mean_a, mean_b = _guided_coefficients(guide[::s, ::s], src[::s, ::s], max(1, round(radius / s)),
                                          eps)
    f_a = _pool().submit(_upsample_linear, mean_a, guide.shape, s)
    q = _upsample_linear(mean_b, guide.shape, s)
    q += f_a.result() * guide
    return q


def transmission(planar: np.ndarray, airlight: np.ndarray, *, omega: float, patch_size: int,
                 dark: np.ndarray | None = None) -> np.ndarray:
    """Raw transmission ``1 - omega * dark(I / A)`` of one ``(C, H, W)`` plane."""
    inv = 1.0 / np.maximum(airlight, 1e-6).astype(np.float32)
    if planar.shape[0] == 1 and dark is not None:
        dark_norm = dark * inv[0]  # the minimum filter commutes with a positive scale
    else:
        m = planar[0] * inv[0]
        for c in range(1, planar.shape[0]):
            np.minimum(m, planar[c] * inv[c], out=m)
        dark_norm = _min_filter(m, patch_size)
    t = dark_norm * np.float32(-omega)
    t += 1.0
    return t


def recover(planar: np.ndarray, t: np.ndarray, airlight: np.ndarray, t0: float,
            out: np.ndarray | None = None) -> np.ndarray:
    """Scene radiance ``J = (I - A) / max(t, t0) + A``, clipped to [0, 1].

    ``planar`` is ``(C, H, W)``; the result is written channel-last, ``(H, W, C)`` (into ``out``).
    """
    if out is None:
        out = np.empty(planar.shape[1:] + planar.shape[:1], planar.dtype)

    def rows(sl: slice) -> None:
        inv_t = 1.0 / np.maximum(t[sl], np.float32(t0))
        for c in range(planar.shape[0]):
            a = np.float32(airlight[c])
            j = planar[c, sl] - a
            j *= inv_t
            j += a
            np.clip(j, 0.0, 1.0, out=j)
            out[sl, :, c] = j

    mid = t.shape[0] // 2
    top = _pool().submit(rows, slice(0, mid))  # numpy releases the GIL: two halves, two cores
    rows(slice(mid, None))
    top.result()
    return out


def dehaze_plane(planar: np.ndarray, *, patch_size: int = 15, omega: float = 0.95,
                 t0: float = 0.1, airlight_fraction: float = 0.001,
                 airlight_estimator: str = "mean", refine: bool = True, guided_radius: int = 60,
                 guided_eps: float = 1e-4, guided_subsample: int = 4,
                 airlight: np.ndarray | None = None, dark: np.ndarray | None = None,
                 out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dehaze one ``(C, H, W)`` float plane in [0, 1]; return ``(J, t, A)``, J as ``(H, W, C)``.

    Defaults are He et al.'s; ``airlight``/``dark`` when already known (a shared airlight).
    """
    if dark is None:
        dark = dark_channel(planar, patch_size)
    if airlight is None:
        airlight = estimate_airlight(planar, dark, airlight_fraction, airlight_estimator)
    t = refined_transmission(planar, airlight, omega=omega, patch_size=patch_size, dark=dark,
                             refine=refine, guided_radius=guided_radius, guided_eps=guided_eps,
                             guided_subsample=guided_subsample)
    return recover(planar, t, airlight, t0, out), t, airlight


def refined_transmission(planar: np.ndarray, airlight: np.ndarray, *, omega: float = 0.95,
                         patch_size: int = 15, dark: np.ndarray | None = None,
                         refine: bool = True, guided_radius: int = 60, guided_eps: float = 1e-4,
                         guided_subsample: int = 4) -> np.ndarray:
    """DCP's transmission map of one ``(C, H, W)`` plane: raw (:func:`transmission`), refined by
    the fast guided filter with the grey image as guide, clipped to [0, 1]."""
    t = transmission(planar, airlight, omega=omega, patch_size=patch_size, dark=dark)
    if refine:
        t = fast_guided_filter(gray(planar), t, guided_radius, guided_eps, guided_subsample)
    return np.clip(t, 0.0, 1.0, out=t)
