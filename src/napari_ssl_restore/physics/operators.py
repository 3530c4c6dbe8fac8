"""Known forward operators ``H`` for restoration through a physical model, and a regulariser.

Deep Image Prior fits ``H(f(z)) ≈ y`` and the physics-based methods ask ``H(G(y)) ≈ y``: ``H`` is a
PSF blur (deconvolution), an anti-aliased downsampling (super-resolution), a mask (inpainting) or
the identity (denoising). Torch functions on ``(N, C, H, W)`` tensors, reflect-padded (a zero border
darkens the edges, which is not what a microscope does).
"""
from __future__ import annotations

import math

import numpy as np

# --- operators -----------------------------------------------------------------------------------

LANCZOS_A = 3
"""Lobes of the Lanczos kernel of :func:`downsample`: its reach in low-resolution pixels."""


def lanczos_kernel(factor: int, a: int = LANCZOS_A) -> np.ndarray:
    """1-D Lanczos-``a`` anti-aliasing kernel for downsampling by ``factor`` (length ``2 a factor``)."""
    k = 2 * a * factor
    pad_left = (k - factor) // 2
    offsets = (np.arange(k) - pad_left - (factor - 1) / 2) / factor
    w = np.sinc(offsets) * np.sinc(offsets / a)
    w[np.abs(offsets) >= a] = 0
    return (w / w.sum()).astype(np.float32)


def downsample(x, factor: int):
    """Anti-aliased downsampling of ``(N, C, H, W)`` by an integer ``factor`` (Lanczos-3, reflect)."""
    import torch
    import torch.nn.functional as F

    if factor == 1:
        return x
    k1 = torch.from_numpy(lanczos_kernel(factor)).to(x.device, x.dtype)
    k = k1.numel()
    pl = (k - factor) // 2
    pr = k - factor - pl
    c = x.shape[1]
    x = F.pad(x, (pl, pr, pl, pr), mode="reflect" if min(x.shape[-2:]) > max(pl, pr) else "replicate")
    x = F.conv2d(x, k1.view(1, 1, 1, k).expand(c, 1, 1, k), stride=(1, factor), groups=c)
    return F.conv2d(x, k1.view(1, 1, k, 1).expand(c, 1, k, 1), stride=(factor, 1), groups=c)


def gaussian_kernel_1d(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian of std ``sigma`` pixels, ``2 ceil(3 sigma) + 1`` long."""
    r = max(1, math.ceil(3 * sigma))
    ax = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-0.5 * (ax / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def gaussian_psf(sigma: float) -> np.ndarray:
    """Normalised 2-D Gaussian PSF of std ``sigma`` pixels, ``2 ceil(3 sigma) + 1`` wide."""
    g = gaussian_kernel_1d(sigma).astype(np.float64)
    psf = np.outer(g, g)
    return (psf / psf.sum()).astype(np.float32)


def psf_widths(psf) -> tuple[float, float]:
    """``(lateral, axial)`` std in pixels of a 3-D PSF ``(Z, Y, X)``, from the second moments of
    its projections (lateral: the mean of the Y and X ones), background clipped at zero."""
    p = np.clip(np.asarray(psf, dtype=np.float64), 0, None)
    if p.ndim != 3 or p.sum() <= 0:
        raise ValueError(f"a 3-D PSF must be (Z, Y, X) with a positive sum; got shape {p.shape}.")
    p = p / p.sum()

    def std(axis: int) -> float:
        m = p.sum(axis=tuple(a for a in range(3) if a != axis))
        i = np.arange(m.size)
        mean = float((i * m).sum())
        return float(np.sqrt(((i - mean) ** 2 * m).sum()))

    return (std(1) + std(2)) / 2, std(0)


def check_psf(psf: np.ndarray) -> np.ndarray:
    """A usable 2-D PSF: non-negative, normalised to sum 1, odd-sized (padded if needed)."""
    psf = np.asarray(psf, dtype=np.float64)
    psf = np.squeeze(psf)
    if psf.ndim != 2:
        raise ValueError(f"psf must be a 2-D image (Y, X); got shape {psf.shape}. For a 3-D PSF, "
                         "pass its in-focus plane (physics-gan: clean='lateral' takes the 3-D "
                         "PSF of a Z stack).")
    if (psf < 0).any() or psf.sum() <= 0:
        raise ValueError("psf must be non-negative with a positive sum; subtract the background "
                         "and clip negative values first.")
    pad = [(0, 1 - s % 2) for s in psf.shape]
    psf = np.pad(psf, pad)
    return (psf / psf.sum()).astype(np.float32)


def psf_kernel(psf, sigma: float, device):
    """The PSF as a float32 tensor on ``device``: the given image (checked, see
    :func:`check_psf`), or a Gaussian of std ``sigma`` when ``psf`` is None."""
    import torch

    return torch.from_numpy(check_psf(psf) if psf is not None else gaussian_psf(sigma)).to(device)


def _pad_for(x, kh: int, kw: int):
    """``(N, C, H, W)`` padded by half a ``kh × kw`` kernel on each side: reflected, or replicated
    where the image is too small to reflect."""
    import torch.nn.functional as F

    mode = "reflect" if min(x.shape[-2:]) > max(kh, kw) // 2 else "replicate"
    return F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode=mode)


def blur(x, psf):
    """Convolve ``(N, C, H, W)`` with a ``(kh, kw)`` PSF tensor (reflect padding, per channel)."""
    import torch.nn.functional as F

    c = x.shape[1]
    kh, kw = psf.shape
    return F.conv2d(_pad_for(x, kh, kw), psf.flip(0, 1).view(1, 1, kh, kw).expand(c, 1, kh, kw),
                    groups=c)


def blur_each(x, kernels):
    """Convolve each image of ``(N, C, H, W)`` with its own kernel, ``(N, kh, kw)`` tensors
    of odd sides (reflect padding, the same kernel for every channel of an image)."""
    import torch.nn.functional as F

    n, c, h, w = x.shape
    kh, kw = kernels.shape[-2:]
    x = _pad_for(x, kh, kw)
    x = x.reshape(1, n * c, *x.shape[-2:])
    weight = kernels.flip(-2, -1)[:, None].repeat_interleave(c, 0)
    return F.conv2d(x, weight, groups=n * c).reshape(n, c, h, w)



def axial_blur_kernel(lateral: float, axial: float, device):
    """The blur an axial slice (Z vertical) has beyond a lateral plane, for Gaussian widths
    ``lateral`` < ``axial`` (pixels, Z sampled like X): a ``(k, 1)`` Gaussian kernel along Z of
    std ``sqrt(axial² - lateral²)``, as a float32 tensor on ``device``."""
    import torch

    k = gaussian_kernel_1d(float(np.sqrt(axial ** 2 - lateral ** 2)))
    return torch.from_numpy(k[:, None]).to(device)


def psf_symmetries(psf) -> bool | str:
    """The augmentations a PSF is invariant under (checked, see :func:`check_psf`): ``True`` for
    every 90° rotation and flip, ``"flips"`` for left-right flips only, ``False`` for none."""
    k = check_psf(psf)
    flips = np.allclose(k, k[:, ::-1], atol=1e-4 * k.max())
    if flips and k.shape[0] == k.shape[1] and np.allclose(k, k.T, atol=1e-4 * k.max()) \
            and np.allclose(k, k[::-1], atol=1e-4 * k.max()):
        return True
    return "flips" if flips else False


def hazed(x, t, airlight):
    """The atmospheric scattering model (Koschmieder; He et al. 2009): ``x t + A (1 - t)``."""
    return x * t + airlight * (1.0 - t)


class HazeOperator:
    """The haze model of the Dark Channel Prior (He, Sun & Tang 2009) as a known operator:
    ``H(x) = x t + A (1 - t)`` on ``(N, C, H, W)`` tensors, with the airlight ``A`` shared by a
    stack (pooled over ``planes``, a few ``(H, W, C)`` planes spread over the stack, as the dcp
    method pools its planes: the brightest 0.1 % of their dark channels together) and each plane's
    transmission ``t`` from its dark channel, refined by the guided filter
    (:mod:`napari_ssl_restore.physics.haze`; DCP's ω 0.95, ``patch`` 15 and guided radius 4 ×
    ``patch`` by default).

    The planes may be in any affine units (a network's percentile units): ``zero`` is where the
    physical zero of intensity lies in them. The dark channel needs that zero — a haze-free pixel is
    dark in physical units, and percentile units put the haze's own floor at 0 — so the estimates
    read ``(x - zero) / (1 - zero)``, clipped to [0, 1] (the dcp method's range units), while
    ``H``, its inverse and :attr:`airlight` are in the planes' units (the model is affine-equivariant
    given ``t``).

    References
    ----------
    .. [1] K. He, J. Sun, X. Tang. Single image haze removal using dark channel prior. CVPR 2009.
    """

    def __init__(self, planes, device, patch: int = 15, radius: int | None = None,
                 zero: float = 0.0):
        import torch

        from .haze import AirlightPool

        self.zero = min(float(zero), 0.0)
        """(Data with negative values has no physical zero: its floor, 0 in units, is used, as the
        dcp method maps the minimum of such data to 0.)"""
        pool = AirlightPool(patch, int(sum(int(np.prod(p.shape[:2])) for p in planes) * 0.001))
        for plane in planes:
            pool.add(self._planar(plane))
        light = pool.airlight()
        self.patch = patch
        self.radius = 4 * patch if radius is None else radius
        self._light = light.astype(np.float32)
        """The airlight in the estimates' (physical, range) units."""
        self.airlight = (self.zero + light * (1.0 - self.zero)).astype(np.float32)
        """The airlight in the planes' units."""
        self._a = torch.from_numpy(self.airlight).to(device).view(1, -1, 1, 1)

    def _planar(self, plane: np.ndarray) -> np.ndarray:
        """An ``(H, W, C)`` plane as the estimates read it: ``(C, H, W)`` in range units."""
        unit = (plane - np.float32(self.zero)) * np.float32(1.0 / (1.0 - self.zero))
        return np.ascontiguousarray(np.clip(unit, 0.0, 1.0).transpose(2, 0, 1))

    def transmission(self, plane: np.ndarray) -> np.ndarray:
        """``t`` of an ``(H, W, C)`` plane, as ``(H, W, 1)``."""
        from .haze import refined_transmission

        return refined_transmission(self._planar(plane), self._light, patch_size=self.patch,
                                    guided_radius=self.radius)[..., None]

    def apply(self, x, t):
        """``H(x) = x t + A (1 - t)`` with the transmission ``t`` (``(N, 1, H, W)``)."""
        return hazed(x, t, self._a)

    def recover(self, y, t, t0: float = 0.1):
        """The Dark Channel Prior's scene, ``(y - A) / max(t, t0) + A`` (He et al.'s ``t0``)."""
        return (y - self._a) / t.clamp_min(t0) + self._a

    def recover_plane(self, plane: np.ndarray) -> np.ndarray:
        """:meth:`recover` of an ``(H, W, C)`` plane under its own transmission, as numpy."""
        t = self.transmission(plane)
        return (plane - self.airlight) / np.maximum(t, 0.1) + self.airlight


def total_variation(x):
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
