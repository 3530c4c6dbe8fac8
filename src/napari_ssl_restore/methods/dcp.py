"""Dark Channel Prior dehazing (He, Sun & Tang, CVPR 2009 / TPAMI 2011).

Haze model ``I = J t + A (1 - t)``. In haze-free patches at least one channel is nearly black, so the
dark channel (per-pixel minimum over channels, then a minimum filter over a patch) of the normalised
image ``I / A`` estimates the haze: ``t = 1 - omega * dark(I / A)``. The airlight ``A`` is read off the
most haze-opaque pixels (top 0.1 % of the dark channel); ``t`` is refined by a guided filter with the
grey image as guide (He, Sun & Tang, ECCV 2010 — the fast replacement for the paper's soft matting), and
``J = (I - A) / max(t, t0) + A``.

For single-channel fluorescence images the dark channel is the minimum filter of the one channel:
out-of-focus light acts like a veil whose level the local minimum reveals.

Implemented in numpy/scipy with O(N) running filters (van Herk/Gil-Werman minimum filter, running-sum
box filter) and ``argpartition`` for the airlight; it does not use the GPU (it runs in well under a
second on a 2000×2000 RGB image on a laptop CPU, see ``benchmarks/bench_dcp.py``).
"""
from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from ..core.axes import as_planes
from ..core.params import param
from ..core.progress import Step
from ..core.registry import MethodResult, MethodSpec, Output, RunContext
from ._public import public_function


@dataclasses.dataclass(frozen=True)
class Params:
    """Dark Channel Prior settings (defaults from He et al.)."""

    method_title = "Dark Channel Prior"

    patch_size: int = param(15, "Side of the square patch of the dark channel's minimum filter, in "
                                "pixels (paper: 15). Larger removes more haze but halos edges.",
                            min=1, max=301)
    omega: float = param(0.95, "Fraction of the haze to remove (paper: 0.95); below 1 keeps a "
                               "little haze so distant objects still look distant.",
                         min=0.0, max=1.0, step=0.01)
    t0: float = param(0.1, "Lower bound on the transmission when recovering the scene (paper: 0.1); "
                           "avoids amplifying noise where the haze is dense.",
                      min=0.001, max=1.0, step=0.01)
    airlight_fraction: float = param(0.001, "Fraction of the brightest dark-channel pixels from which "
                                            "the airlight is estimated (paper: 0.001 = 0.1 %).",
                                     min=1e-6, max=0.5, step=0.001, advanced=True)
    airlight_estimator: Literal["mean", "brightest"] = param(
        "mean", "'mean' averages the input over the selected pixels (robust to single hot pixels, "
                "as most implementations do); 'brightest' takes the brightest of them (the paper).",
        choices=("mean", "brightest"), advanced=True)
    shared_airlight: bool = param(True, "Estimate one airlight from all planes of a stack or "
                                        "time-lapse, so frames are dehazed alike and do not flicker; "
                                        "off = one airlight per plane.")
    refine: bool = param(True, "Refine the transmission with a guided filter (grey image as guide); "
                               "off gives the blocky raw estimate.")
    guided_radius: int = param(60, "Radius of the guided filter in pixels (window 2r+1; paper: 60).",
                               min=1, max=1000, advanced=True)
    guided_subsample: int = param(4, "Fast guided filter (He & Sun 2015): compute the filter's "
                                     "coefficients on a grid this many times coarser, then upsample "
                                     "them; 1 = exact guided filter. 4 is visually identical and "
                                     "about twice as fast.", min=1, max=16, advanced=True)
    guided_eps: float = param(1e-4, "Regularisation of the guided filter (paper: 1e-4): larger "
                                    "smooths the transmission more, smaller follows edges more.",
                              min=1e-8, max=1.0, step=1e-4, advanced=True)


# --- the operators -------------------------------------------------------------------------------
# Internally a plane is channel-first, (C, H, W): reductions over channels and per-channel arithmetic
# then run over contiguous memory, which is several times faster than over an interleaved last axis.

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """Two threads for the box filters (scipy's running-sum filter releases the GIL)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dcp")
    return _POOL


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
    pixels = planar.reshape(planar.shape[0], -1)[:, idx]
    if estimator == "brightest":
        return pixels[:, np.argmax(pixels.sum(axis=0))].astype(np.float32)
    return pixels.mean(axis=1, dtype=np.float64).astype(np.float32)


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


def transmission(planar: np.ndarray, airlight: np.ndarray, params: Params,
                 dark: np.ndarray | None = None) -> np.ndarray:
    """Raw transmission ``1 - omega * dark(I / A)`` of one ``(C, H, W)`` plane."""
    inv = 1.0 / np.maximum(airlight, 1e-6).astype(np.float32)
    if planar.shape[0] == 1 and dark is not None:
        dark_norm = dark * inv[0]  # the minimum filter commutes with a positive scale
    else:
        m = planar[0] * inv[0]
        for c in range(1, planar.shape[0]):
            np.minimum(m, planar[c] * inv[c], out=m)
        dark_norm = _min_filter(m, params.patch_size)
    t = dark_norm * np.float32(-params.omega)
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


def dehaze_plane(planar: np.ndarray, params: Params, airlight: np.ndarray | None = None,
                 dark: np.ndarray | None = None, out: np.ndarray | None = None,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dehaze one ``(C, H, W)`` float plane in [0, 1]; return ``(J, t, A)``, J as ``(H, W, C)``."""
    if dark is None:
        dark = dark_channel(planar, params.patch_size)
    if airlight is None:
        airlight = estimate_airlight(planar, dark, params.airlight_fraction, params.airlight_estimator)
    t = transmission(planar, airlight, params, dark)
    if params.refine:
        t = fast_guided_filter(gray(planar), t, params.guided_radius, params.guided_eps,
                               params.guided_subsample)
    t = np.clip(t, 0.0, 1.0, out=t)
    return recover(planar, t, airlight, params.t0, out), t, airlight


# --- the generator -------------------------------------------------------------------------------

def run(image: np.ndarray, params: Params, ctx: RunContext):
    """Dehaze every plane of a canonical ``[T][Z]YXC`` float image; closed form, one step per plane."""
    planes = as_planes(image)
    n, c = planes.shape[0], planes.shape[-1]
    shared = params.shared_airlight and n > 1
    total = 2 * n if shared else n
    step = 0
    darks: list[np.ndarray | None] = [None] * n
    airlight = None
    if shared:
        for i in range(n):
            darks[i] = dark_channel(np.moveaxis(planes[i], -1, 0), params.patch_size)
            step += 1
            yield Step(step, total, f"dark channel {i + 1}/{n}")
        airlight = estimate_airlight(np.moveaxis(planes, -1, 0), np.stack(darks),
                                     params.airlight_fraction, params.airlight_estimator)
    dehazed = np.empty_like(planes)
    trans = np.empty(planes.shape[:-1], np.float32)
    airlights = np.empty((n, c), np.float32)
    for i in range(n):
        planar = np.ascontiguousarray(np.moveaxis(planes[i], -1, 0))
        _, trans[i], airlights[i] = dehaze_plane(planar, params, airlight, darks[i], dehazed[i])
        darks[i] = None
        step += 1
        yield Step(step, total, f"dehazed plane {i + 1}/{n}")
    lead = image.shape[:-3]
    if shared:
        airlight_out = airlight
    else:
        airlight_out = airlights.reshape(lead + (c,)) if lead else airlights[0]
    info = {"airlight": (np.asarray(airlight_out) * ctx.scale + ctx.offset).round(6)}
    return MethodResult(
        {"image": dehazed.reshape(image.shape), "transmission": trans.reshape(image.shape[:-1]),
         "airlight": airlight_out},
        info,
    )


def _demo() -> list[dict]:
    from ..data import fluorescence_timelapse, hazy_scene

    return [{**hazy_scene(), "params": {}}, {**fluorescence_timelapse(), "params": {}}]


SPEC = MethodSpec(
    name="dcp",
    title="Dark Channel Prior dehazing (He et al. 2009): removes haze / out-of-focus veil",
    task="dehaze",
    params=Params,
    run=run,
    function="dehaze_dcp",
    outputs=(
        Output("image", "The dehazed image, same shape, axes and dtype as the input."),
        Output("transmission", "Refined transmission map t in [0, 1] (input shape without C).",
               kind="map"),
        Output("airlight", "Airlight A in input units: shape (C,) (or () for grey) when shared, "
                           "else one per plane.", kind="value", layer=False),
    ),
    scaling="range",
    demo=_demo,
)

dehaze_dcp = public_function(
    SPEC,
    summary="Remove haze with the Dark Channel Prior (He, Sun & Tang 2009).",
    notes="""
    The haze model is :math:`I = J t + A (1 - t)`. The dark channel of the airlight-normalised image
    gives :math:`t = 1 - \\omega \\min_{y \\in \\Omega(x)} \\min_c I_c(y) / A_c`, refined by a grey-guided
    filter, and :math:`J = (I - A) / \\max(t, t_0) + A`. Grey images (fluorescence) use the single
    channel as their dark channel. Stacks are dehazed plane by plane; ``shared_airlight`` estimates one
    airlight for all planes so time-lapses do not flicker.
    """,
    references="""
    .. [1] K. He, J. Sun, X. Tang. Single Image Haze Removal Using Dark Channel Prior. CVPR 2009;
           IEEE TPAMI 33(12), 2011. :DOI:`10.1109/TPAMI.2010.168`
    .. [2] K. He, J. Sun, X. Tang. Guided Image Filtering. ECCV 2010; IEEE TPAMI 35(6), 2013.
    """,
    examples="""
    >>> from napari_ssl_restore import dehaze_dcp
    >>> from napari_ssl_restore.data import hazy_scene
    >>> clear = dehaze_dcp(hazy_scene()["image"], patch_size=15)
    >>> clear.dtype
    dtype('uint8')
    """,
)
