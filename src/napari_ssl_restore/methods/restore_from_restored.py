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

Addition: the restored frames are fused over time (``fusion_radius``, default 2; 0 is the method as
published): each is averaged with its restored neighbours, warped onto it by the optical flow
between them, where the flow explains them (:class:`~napari_ssl_restore.engine.fusion.Fusion`).

Deviations: random crops instead of whole frames (``patch_size``/``batch_size``); defaults of more
steps and a larger learning rate than the paper's (lr 1e-4, 10 steps per frame online, 40 epochs
offline instead of ~10), because on a CPU budget the paper's 1e-5 and one step per frame barely move
the weights, and 40 epochs measured +0.3 dB over 10 (see docs/benchmarks); the starting model
is the project's shipped denoiser (a noise-aware residual U-Net; ``model="dncnn-blind-gray"`` for
the first release's blind DnCNN).
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
from ..physics.noise import NoiseModel, estimate_noise
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
        done, stopped_late = yield from restore_all(
            r, out, params, step0=total - n, total=total, stoppable=not stopped)
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
