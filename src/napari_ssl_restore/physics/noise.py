"""Camera noise as the methods model it: variance ``gain * x + offset`` at clean intensity ``x``
(Poisson-Gaussian; ``gain = 0`` is Gaussian), white or spatially correlated, estimated from the data
(Restore-from-Restored re-noises its pseudo-clean frames with it; the physics-based GAN degrades
its clean examples with it) and drawn on the device.
"""
from __future__ import annotations

import dataclasses

import numpy as np

TEXTURE_RATIO = 0.5
""":func:`noise_of_image` takes the smooth-block fit instead of the neighbour residual when the
fit's standard deviation is under this share of the residual's: the residual was texture. Measured
ratios (docs/benchmarks/unpaired.md): 0.91–0.99 on hazy, blurred and widefield fields, 0.09–0.13 on
hazy 8-bit photographs; the threshold was set between them, not tuned on a score."""


@dataclasses.dataclass
class NoiseModel:
    """Noise of variance ``gain * x + offset`` at clean intensity ``x``, white or spatially
    correlated through a unit-energy ``kernel`` (odd-sized, ``None`` for white noise)."""

    gain: float
    offset: float
    kernel: np.ndarray | None = None

    def sample(self, clean, generator):
        """Noise for an ``(N, C, H, W)`` tensor ``clean``, drawn on its device: white, shaped by
        the kernel (circular convolution) when correlated, scaled by the local standard deviation."""
        import torch
        import torch.nn.functional as F

        white = torch.randn(clean.shape, generator=generator, device=clean.device,
                            dtype=clean.dtype)
        if self.kernel is not None:
            n, c, h, w = white.shape
            k = torch.as_tensor(self.kernel, device=clean.device, dtype=clean.dtype)
            r = k.shape[-1] // 2
            padded = F.pad(white.reshape(n * c, 1, h, w), (r, r, r, r), mode="circular")
            white = F.conv2d(padded, k[None, None]).reshape(n, c, h, w)
        var = (self.gain * clean.clamp_min(0) + self.offset).clamp_min(1e-10)
        return white * var.sqrt()

    def mean_abs(self, clean):
        """The expected ``|noise|`` at each pixel of the tensor ``clean`` (Gaussian:
        ``sqrt(2 var / π)``)."""
        return (2.0 / np.pi * (self.gain * clean.clamp_min(0) + self.offset).clamp_min(0)).sqrt()

    def describe(self) -> dict:
        return {"gain": float(self.gain), "offset": float(self.offset),
                "sigma_at_0": float(np.sqrt(max(self.offset, 0))),
                "correlated": self.kernel is not None}


def estimate_noise(noisy: np.ndarray, clean: np.ndarray, kind: str = "auto",
                   correlated: bool = True, kernel_size: int = 5,
                   min_correlation: float = 0.1) -> NoiseModel:
    """Estimate a :class:`NoiseModel` from ``noisy`` and a pseudo-clean estimate ``clean``.

    The residual's variance (per bin, so a biased pseudo-clean does not count as noise) is fitted
    as ``gain * clean + offset`` over 20 intensity bins
    (Poisson-Gaussian, the usual camera model; ``kind='gaussian'`` fits the offset only, ``'auto'``
    keeps the gain only when it explains a tenth of the variance at the median intensity or more). With
    ``correlated``, when neighbouring residuals correlate by more than ``min_correlation``, the
    spectrum of the variance-normalised residual, averaged over 32×32 tiles, gives a zero-phase
    shaping kernel (``kernel_size``²) that reproduces the noise's spatial correlation.
    """
    res = np.subtract(noisy, clean, dtype=np.float32)
    x = np.asarray(clean, np.float32)
    gain, offset = fit_variance(res, x, kind)
    model = NoiseModel(gain, offset)
    if correlated:
        std = np.sqrt(np.clip(gain * np.clip(x, 0, None) + offset, 1e-10, None))
        unit = (res / std).reshape((-1,) + res.shape[-3:])  # (N, H, W, C)
        unit = unit - unit.mean(axis=(1, 2), keepdims=True)
        energy = float(np.mean(unit ** 2)) or 1.0
        rho = max(abs(float(np.mean(unit[:, 1:] * unit[:, :-1]))),
                  abs(float(np.mean(unit[:, :, 1:] * unit[:, :, :-1])))) / energy
        if rho > min_correlation:  # else white: a denoiser's residual is never exactly white
            model.kernel = _shaping_kernel(unit, kernel_size)
    return model


def fit_variance(res: np.ndarray, x: np.ndarray, kind: str = "auto") -> tuple[float, float]:
    """``(gain, offset)`` of the residual ``res``'s variance as ``gain * x + offset``, fitted over
    20 bins of the intensity ``x`` (the bins' own means are removed, so a bias of the pseudo-clean
    image does not count as noise); see :func:`estimate_noise` for ``kind``."""
    gain, offset = 0.0, float(np.var(res, dtype=np.float64))
    if kind in ("auto", "poisson-gaussian"):
        edges = np.unique(np.quantile(x, np.linspace(0, 1, 21)))
        if edges.size > 2:
            idx = np.clip(np.searchsorted(edges, x.ravel(), side="right") - 1, 0, edges.size - 2)
            counts = np.bincount(idx, minlength=edges.size - 1)
            ok = counts > 50
            means = np.bincount(idx, x.ravel(), edges.size - 1)[ok] / counts[ok]
            r = res.ravel().astype(np.float64)
            mean_r = np.bincount(idx, r, edges.size - 1)[ok] / counts[ok]
            var = np.bincount(idx, r ** 2, edges.size - 1)[ok] / counts[ok] - mean_r ** 2
            if ok.sum() >= 2:
                a, b = np.polyfit(means, var, 1)
                a = max(a, 0.0)
                b = max(b, 1e-8) if a > 0 else offset
                med = float(np.median(x))
                if kind == "poisson-gaussian" or a * max(med, 0) > 0.1 * (a * max(med, 0) + b):
                    gain, offset = float(a), float(max(np.mean(var - a * means), 1e-8))
    return gain, offset


def noise_of_image(image: np.ndarray, kind: str = "auto",
                   texture_ratio: float = TEXTURE_RATIO) -> NoiseModel:
    """A white :class:`NoiseModel` of ``image`` (``(H, W)``, ``(H, W, C)`` or ``(K, H, W, C)``)
    alone, without a clean estimate: each pixel minus the mean of its four neighbours is, for
    white noise of variance v, a residual of variance 1.25 v, and the signal's share of it is
    a quarter of the discrete Laplacian — small where the image is smooth, as a blurred or
    undersampled acquisition is. The intensity of the fit is the 3×3 local mean.

    On a sharp image the neighbour residual is texture as much as noise (a clean 8-bit photograph
    read as σ ≈ 6 grey levels). The smooth-block fit of the restore assistant
    (:func:`~napari_ssl_restore.physics.estimate.noise_fit`, after Foi et al. 2008) reads the noise
    on the image's smoothest blocks only; when its standard deviation at the median intensity is
    under ``texture_ratio`` (:data:`TEXTURE_RATIO`) times the neighbour residual's, the residual
    was texture and that fit is the model returned (``texture_ratio=0``: the neighbour residual
    alone). On blurred or widefield fields the two agree within 10 %, and the neighbour residual
    (closer there: the smooth-block fit reads 3–6 % low) is kept."""
    from scipy import ndimage as ndi

    from .estimate import noise_fit

    img = np.asarray(image, np.float32)
    planes = img.reshape((-1,) + img.shape[-3:]) if img.ndim >= 3 else img[None, ..., None]
    res, mean = [], []
    for plane in planes:
        for c in range(plane.shape[-1]):
            ch = plane[..., c]
            around = ndi.convolve(ch, np.array([[0, .25, 0], [.25, 0, .25], [0, .25, 0]],
                                               np.float32), mode="reflect")
            res.append(((ch - around) / np.sqrt(1.25))[1:-1, 1:-1].ravel())
            mean.append(ndi.uniform_filter(ch, 3, mode="reflect")[1:-1, 1:-1].ravel())
    gain, offset = fit_variance(np.concatenate(res), np.concatenate(mean), kind)
    if texture_ratio <= 0:
        return NoiseModel(gain, offset)
    try:
        smooth = noise_fit([p[..., c] for p in planes for c in range(p.shape[-1])])
    except ValueError:  # planes too small for its blocks: the neighbour residual alone
        return NoiseModel(gain, offset)
    med = max(float(np.median(planes)), 0.0)
    a, b = (0.0, smooth["sigma"] ** 2) if kind == "gaussian" else (smooth["a"], smooth["b"])
    if a * med + b < texture_ratio ** 2 * (gain * med + offset):
        return NoiseModel(a, max(b, 1e-10))
    return NoiseModel(gain, offset)


def _shaping_kernel(unit: np.ndarray, size: int, tile: int = 32) -> np.ndarray | None:
    """Zero-phase kernel ``k`` (``size``², unit energy) such that white noise convolved with it has
    the average power spectrum of ``unit`` (``(N, H, W, C)``, roughly unit variance)."""
    n, h, w, c = unit.shape
    t = min(tile, h, w)
    if t < size:
        return None
    spectra, count = np.zeros((t, t)), 0
    for i in range(n):
        for y in range(0, h - t + 1, t):
            for x in range(0, w - t + 1, t):
                for ch in range(c):
                    patch = unit[i, y:y + t, x:x + t, ch]
                    spectra += np.abs(np.fft.fft2(patch - patch.mean())) ** 2
                    count += 1
    psd = spectra / max(count, 1)
    kern = np.real(np.fft.ifft2(np.sqrt(psd / psd.mean())))
    kern = np.fft.fftshift(kern)
    m, r = t // 2, size // 2
    kern = kern[m - r:m + r + 1, m - r:m + r + 1]
    kern = kern / np.sqrt(np.sum(kern ** 2))
    return kern.astype(np.float32)


def noise_std_map(x, a, b, smooth: float = 2.0):
    """The noise standard deviation at each pixel of a noisy ``(N, C, H, W)`` tensor ``x`` under
    the variance model ``a·u + b``: the noise-level map a noise-aware network reads beside the image
    (FFDNet: Zhang, Zuo & Zhang, IEEE TIP 2018). The clean signal ``u`` is unknown, so ``x``
    smoothed by a Gaussian of ``smooth`` pixels stands for it (truncated at 4σ, borders mirrored
    about the edge as scipy's ``gaussian_filter`` does by default; an image side smaller than the
    kernel's radius repeats its edge instead). ``a`` and ``b`` are host numbers or arrays that
    broadcast against ``(N, C, 1, 1)`` (one model per image or channel); when every ``a`` is 0 the
    map is the constant ``sqrt(b)`` and nothing is smoothed. Returned on ``x``'s device, no
    gradient."""
    import torch
    import torch.nn.functional as F

    a_np, b_np = np.asarray(a, np.float32), np.asarray(b, np.float32)
    with torch.no_grad():
        a_t = torch.as_tensor(a_np, device=x.device, dtype=x.dtype)
        b_t = torch.as_tensor(b_np, device=x.device, dtype=x.dtype)
        if smooth <= 0 or not np.any(a_np != 0):
            return (b_t.clamp_min(0).sqrt() * torch.ones_like(x)).to(x.dtype)
        n, c, h, w = x.shape
        r = int(4.0 * smooth + 0.5)
        t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-0.5 * (t / smooth) ** 2)
        k = k / k.sum()
        u = x.reshape(n * c, 1, h, w)
        for dim, kernel in ((-1, k.view(1, 1, 1, -1)), (-2, k.view(1, 1, -1, 1))):
            if u.shape[dim] > r:  # mirror about the edge: ... c b a | a b c ...
                u = torch.cat([u.narrow(dim, 0, r).flip(dim), u,
                               u.narrow(dim, u.shape[dim] - r, r).flip(dim)], dim)
            else:
                pad = (r, r, 0, 0) if dim == -1 else (0, 0, r, r)
                u = F.pad(u, pad, mode="replicate")
            u = F.conv2d(u, kernel)
        var = a_t * u.reshape(n, c, h, w) + b_t
        return var.clamp_min(0).sqrt()
