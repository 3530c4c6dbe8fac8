"""Restore-from-Restored (Lee, Son, Kim, Lee; CVPR 2021): fine-tune a denoiser on its own output.

The pretrained denoiser turns the noisy video into a pseudo-clean one. Synthetic noise of the kind
and level found in the data is added to the pseudo-clean frames, and the denoiser is fine-tuned to
map (pseudo-clean + noise) back to pseudo-clean with the mean squared error; the fine-tuned model
then restores the *original* frames. Rounds can be repeated with the improved pseudo-clean frames.

The noise model is estimated from the data: the residual (noisy − pseudo-clean) variance is fitted as
``gain * intensity + offset`` (Poisson-Gaussian, the camera model of photon-limited microscopy;
``noise='gaussian'`` keeps a constant σ) and, with ``correlated=True``, its spatial correlation is
reproduced by a shaping kernel estimated from the residual's power spectrum (correlated camera
noise, e.g. EMCCD or demosaiced sensors). Adam with lr 1e-5 in the paper.

- ``mode='online'``: sweep forward through T; each frame: pseudo-clean from the current model, noise
  model from that frame, ``steps_per_frame`` steps, then the frame is restored.
- ``mode='offline'``: pseudo-clean video and one noise model from the frames, ``epochs`` passes over
  the frames (``rounds`` times, refreshing the pseudo-clean video in between), then every frame is
  restored by the final model. A movie too long for the training memory trains on frames spread
  evenly over it; every frame is restored. Synthetic noise is drawn on the device.

Deviations: random crops instead of whole frames (``patch_size``/``batch_size``); defaults of more
steps and a larger learning rate than the paper's (lr 1e-4, 10 steps per frame online, 40 epochs
offline instead of ~10), because on a CPU budget the paper's 1e-5 and one step per frame barely move
the weights, and 40 epochs measured +0.3 dB over 10 (see the README's benchmark); the starting model
is the project's shipped DnCNN.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.progress import StopRequested
from ..core.registry import MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..engine.video import OFFLINE, ONLINE, VideoParams, demo_samples
from ._public import public_function


@dataclasses.dataclass(frozen=True)
class Params(VideoParams):
    """Restore-from-Restored settings (Lee et al. 2021)."""

    method_title = "Restore-from-Restored"

    steps_per_frame: int = param(10, "online: fine-tuning steps on each frame (paper: 1).",
                                 min=1, max=100_000, when=ONLINE)
    epochs: int = param(40, "offline: passes over all frames per round (paper: ~10; 40 gained "
                            "0.2-0.3 dB over 10 in the video benchmark).", min=1,
                        max=100_000, when=OFFLINE)
    rounds: int = param(1, "offline: times to refresh the pseudo-clean video with the fine-tuned "
                           "model and fine-tune again.", min=1, max=20, when=OFFLINE)
    learning_rate: float = param(1e-4, "Adam learning rate (paper: 1e-5).", min=1e-8, max=1.0,
                                 step=1e-5, advanced=True)
    noise: Literal["auto", "gaussian", "poisson-gaussian"] = param(
        "auto", "Noise model fitted to (noisy − pseudo-clean): 'gaussian' (constant σ), "
                "'poisson-gaussian' (variance = gain·intensity + offset, photon-limited data), "
                "'auto' (Poisson-Gaussian when the intensity dependence is significant).",
        choices=("auto", "gaussian", "poisson-gaussian"))
    correlated: bool = param(True, "Estimate and reproduce the noise's spatial correlation "
                                   "(off: white noise).", advanced=True)

    def __post_init__(self):
        self._check_video("Restore-from-Restored")


def _mse(pred, target):
    return ((pred - target) ** 2).mean()


# --- the noise model -------------------------------------------------------------------------------

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


def _sampler(run, clean: np.ndarray, model: NoiseModel, patch: int, generator):
    """Batches of (pseudo-clean crop + synthetic noise, pseudo-clean crop) from ``(K, H, W, C)``
    pseudo-clean planes, cropped and noised on the device, fresh noise every time."""
    from ..engine.train import PatchSampler, to_device

    crops = PatchSampler([to_device(clean, run.device)], [(k,) for k in range(len(clean))],
                         patch, run.rng)

    def sample(n: int):
        (c,) = crops(n)
        return c + model.sample(c, generator), c

    return sample


# --- the generator ---------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs):
    """Fine-tune the starting denoiser on re-noised pseudo-clean frames, then restore the video."""
    import torch

    from ..engine.train import TRAIN_BYTES, planes_within, spread
    from ..engine.video import finish, online, predict_some, restore_all, start, tune

    r = start(planes, params, ctx)
    generator = torch.Generator(device=r.device).manual_seed(ctx.seed)
    n = len(planes)

    if params.mode == "online":
        noise_models = []

        def make_sampler(i, _previous):
            clean = r.predict(planes[i])
            model = estimate_noise(planes[i], clean, params.noise, params.correlated)
            noise_models.append(model.describe())
            return _sampler(r, clean[None], model, params.patch_size, generator)

        r.info.update((yield from online(r, out, params, make_sampler=make_sampler, loss_fn=_mse,
                                         lr=params.learning_rate,
                                         steps_per_frame=params.steps_per_frame)))
        if noise_models:
            r.info["noise_model_last_frame"] = noise_models[-1]
    else:
        # a long movie trains on frames spread over it, as many as TRAIN_BYTES holds
        plane_bytes = int(np.prod(planes.hw)) * planes.c * 4
        chosen = spread(n, planes_within(TRAIN_BYTES, plane_bytes))
        steps = params.epochs * len(chosen)
        total = params.rounds * (len(chosen) + steps) + n
        opt = torch.optim.Adam(r.den.parameters(), lr=params.learning_rate)
        done_steps, loss, stopped, k = 0, float("nan"), False, 0
        for rnd in range(params.rounds):
            # round 1: nothing fine-tuned yet, a Stop cancels the run; later: keep the rounds done
            clean, stopped = yield from predict_some(
                r, chosen, step0=k, total=total,
                label=f"round {rnd + 1}/{params.rounds}: pseudo-clean", stoppable=True)
            if stopped:
                if rnd == 0:
                    raise StopRequested()
                break
            k += len(chosen)
            # the noise model from at most 16 of those planes (bounded memory)
            picks = [chosen[j] for j in spread(len(chosen), 16)]
            model = estimate_noise(np.stack([planes[i] for i in picks]),
                                   np.stack([clean[i] for i in picks]), params.noise,
                                   params.correlated)
            r.info.setdefault("noise_models", []).append(model.describe())
            sample = _sampler(r, np.stack([clean[i] for i in chosen]), model, params.patch_size,
                              generator)
            del clean
            loop = yield from tune(r, opt, sample, _mse, steps, params.batch_size, step0=k,
                                   total=total,
                                   label=f"round {rnd + 1}/{params.rounds}: fine-tuning step")
            done_steps += loop.steps
            loss = loop.loss
            k += steps
            if loop.stopped:
                stopped = True
                break
        done, stopped_late = yield from restore_all(r, out, step0=total - n, total=total,
                                                    stoppable=not stopped)
        r.info.update(steps=done_steps, final_loss=loss, stopped=stopped or stopped_late,
                      planes_done=done, training_frames=len(chosen))
    return finish(r, params, ctx, method="restore-from-restored")


SPEC = MethodSpec(
    name="restore-from-restored",
    title="Restore-from-Restored (Lee et al. 2021): fine-tune a denoiser on its re-noised output",
    task="denoise",
    params=Params,
    run=run,
    function="denoise_restore_from_restored",
    outputs=(Output("image", "The denoised time-lapse, same shape, axes and dtype as the input."),),
    video=True,
    scaling="percentile",
    uses_torch=True,
    demo=demo_samples,
    linked_planes=lambda p: ("Restore-from-Restored fine-tunes the denoiser on the frames of the "
                             "movie (fine-tune once with save_model=, then apply it with dncnn and "
                             "model=)"),
)

denoise_restore_from_restored = public_function(
    SPEC,
    summary="Denoise a time-lapse by fine-tuning a pretrained denoiser on its re-noised output.",
    notes="""
    With :math:`\\hat x_t = f_{\\theta_0}(y_t)` the pseudo-clean frames and :math:`n` synthetic noise
    drawn from the noise model fitted to :math:`y_t - \\hat x_t`, minimises
    :math:`\\sum_t \\lVert f_\\theta(\\hat x_t + n) - \\hat x_t \\rVert_2^2` and returns
    :math:`f_\\theta(y_t)`. A single image works too (``axes='TYX'`` with one frame). ``full_output=
    True`` also returns the fine-tuned ``model`` and the fitted noise model in the provenance.
    """,
    references="""
    .. [1] S. Lee, D. Son, J. Kim, K. M. Lee. Restore from Restored: Video Restoration with
           Pseudo Clean Video. CVPR 2021.
    """,
    examples="""
    >>> import numpy as np
    >>> from napari_ssl_restore import denoise_restore_from_restored
    >>> rng = np.random.default_rng(0)
    >>> video = (0.5 + 0.1 * rng.standard_normal((3, 32, 32))).astype(np.float32)
    >>> denoise_restore_from_restored(video, axes="TYX", mode="online", steps_per_frame=2).shape
    (3, 32, 32)
    """,
)
