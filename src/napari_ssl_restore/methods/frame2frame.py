"""Frame2Frame (Ehret, Davy, Morel, Facciolo, Arias; CVPR 2019): model-blind video denoising.

A pretrained denoiser is fine-tuned on the video itself. Consecutive frames show (nearly) the same
scene with independent noise, so once the previous noisy frame is warped onto the current one by the
optical flow it is a noisy *target* for the current noisy frame, as in Noise2Noise. The flow is
computed between the denoised frames (TV-L1, scikit-image), the warp is a bilinear backward warp
(``grid_sample``), and pixels where the flow cannot be trusted — occlusions (large flow divergence),
large warping error between the denoised frames, pixels warped from outside the frame — are masked
out of the L1 loss (dilated). Adam, lr 5e-5, as in the paper.

- ``mode='online'``: sweep forward through T; each frame gets ``steps_per_frame`` steps (paper: 20)
  on its pair with the previous restored frame and is then restored by the model as it is. The first
  frame has no predecessor and is restored by the starting model.
- ``mode='offline'``: flows for every consecutive pair from the starting model's denoised video (the
  first frame pairs with the second), ``epochs`` passes over all pairs, then every frame is restored
  by the final model.

Deviation: training uses random crops (``patch_size``, ``batch_size``) of the frame pair instead of
the whole frame, so large frames fit on a CPU; the starting model is this project's shipped DnCNN
(trained offline by ``scripts/train_denoiser.py``), not the authors' DnCNN weights.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.progress import Step
from ..core.registry import MethodSpec, Output, RunContext
from ._public import public_function
from ._video import OFFLINE, ONLINE, VideoParams, demo_samples


@dataclasses.dataclass(frozen=True)
class Params(VideoParams):
    """Frame2Frame settings (Ehret et al. 2019)."""

    method_title = "Frame2Frame"

    steps_per_frame: int = param(20, "online: fine-tuning steps on each frame (paper: 20).",
                                 min=1, max=100_000, when=ONLINE)
    epochs: int = param(10, "offline: passes over all consecutive frame pairs.", min=1,
                        max=100_000, when=OFFLINE)
    learning_rate: float = param(5e-5, "Adam learning rate (paper: 5e-5).", min=1e-8, max=1.0,
                                 step=1e-5, advanced=True)
    flow: Literal["tvl1", "ilk"] = param(
        "tvl1", "Optical flow between denoised frames: 'tvl1' (TV-L1, as in the paper) or 'ilk' "
                "(iterative Lucas-Kanade, about 2x faster, less accurate at motion boundaries).",
        choices=("tvl1", "ilk"), advanced=True)
    divergence_threshold: float = param(0.75, "Mask pixels whose flow divergence magnitude "
                                              "exceeds this (occlusions; paper: 0.75).",
                                        min=0.0, max=100.0, step=0.05, advanced=True)
    warp_error_threshold: float = param(0.1, "Mask pixels where the warped previous denoised "
                                             "frame differs from the current one by more than "
                                             "this (normalised intensity 0-1).",
                                        min=0.0, max=10.0, step=0.01, advanced=True)
    mask_dilation: int = param(2, "Grow the masked (untrusted) regions by this many pixels.",
                               min=0, max=100, advanced=True)

    def __post_init__(self):
        self._check_video("Frame2Frame")


def _masked_l1(pred, target):
    y, m = target
    return (m * (pred - y).abs()).sum() / (m.sum() * pred.shape[1]).clamp_min(1.0)


def _pair(frames, denoised, t, s, p, params):
    """Target (previous noisy frame warped onto frame t) and mask, from denoised frames."""
    from ._video import occlusion_mask, optical_flow, warp

    flow = optical_flow(denoised(t, p), denoised(s, p), params.flow)
    warped, inside = warp(frames[s, p], flow)
    warped_den, _ = warp(denoised(s, p), flow)
    mask = occlusion_mask(flow, warped_den, denoised(t, p), inside,
                          divergence=params.divergence_threshold,
                          warp_error=params.warp_error_threshold, dilation=params.mask_dilation)
    return warped, mask.astype(np.float32)[..., None]


def run(image: np.ndarray, params: Params, ctx: RunContext):
    """Fine-tune the starting denoiser on the time-lapse by Frame2Frame, then restore it."""
    import time

    from ._video import (fine_tune, finish, make_optimizer, online, predict, predict_all,
                         restore_all, start, tensor_sampler)

    if image.shape[0] < 2:
        raise ValueError("Frame2Frame needs at least 2 frames along T to pair them; got 1. Use "
                         "dncnn or restore-from-restored for a single image.")
    device, rng, frames, den, base, info = start(image, params, ctx)
    n_t, n_p = frames.shape[:2]
    flow_seconds = 0.0

    if params.mode == "online":
        def make_sampler(t, p, out):
            nonlocal flow_seconds
            if t == 0:
                return None
            current = predict(den, frames[t, p], device, params.tile_size, params.tile_overlap)
            tf = time.perf_counter()
            target, mask = _pair(frames, lambda i, q: current if i == t else out[i, q], t, t - 1,
                                 p, params)
            flow_seconds += time.perf_counter() - tf
            return tensor_sampler(rng, device, [frames[t, p]], [target, mask], params.patch_size)

        out, run_info = yield from online(frames, den, device, params, make_sampler=make_sampler,
                                          loss_fn=_masked_l1, lr=params.learning_rate,
                                          steps_per_frame=params.steps_per_frame,
                                          shape=image.shape)
        info.update(run_info)
    else:
        n = n_t * n_p
        pairs = [(t, t - 1 if t else 1, p) for t in range(n_t) for p in range(n_p)]
        steps = params.epochs * len(pairs)
        total = n + len(pairs) + steps + n
        denoised, _, _ = yield from predict_all(
            frames, den, device, params, step0=0, total=total,
            label="denoising with the starting model:", on_stop="cancel")
        samplers = []
        for i, (t, s, p) in enumerate(pairs):
            tf = time.perf_counter()
            target, mask = _pair(frames, lambda a, q: denoised[a, q], t, s, p, params)
            flow_seconds += time.perf_counter() - tf
            samplers.append(tensor_sampler(rng, device, [frames[t, p]], [target, mask],
                                           params.patch_size))
            yield Step(n + i + 1, total, f"optical flow {i + 1}/{len(pairs)}")
        del denoised
        opt = make_optimizer(den, params.learning_rate)
        done_steps, loss, stopped = yield from fine_tune(
            den, opt, samplers, steps, _masked_l1, rng, params.batch_size, step0=n + len(pairs),
            total=total, label="fine-tuning")
        out, done, stopped_late = yield from restore_all(
            frames, den, device, params, step0=n + len(pairs) + steps, total=total,
            shape=image.shape, stoppable=not stopped)
        info.update(steps=done_steps, final_loss=loss, stopped=stopped or stopped_late,
                    planes_done=done, pairs=len(pairs))
    info["flow_seconds"] = round(flow_seconds, 3)
    return finish(out, image, den, base, params, ctx, info, method="frame2frame")


SPEC = MethodSpec(
    name="frame2frame",
    title="Frame2Frame (Ehret et al. 2019): fine-tune a denoiser on a time-lapse via optical flow",
    task="denoise",
    params=Params,
    run=run,
    function="denoise_frame2frame",
    outputs=(Output("image", "The denoised time-lapse, same shape, axes and dtype as the input."),),
    video=True,
    scaling="percentile",
    uses_torch=True,
    demo=demo_samples,
)

denoise_frame2frame = public_function(
    SPEC,
    summary="Denoise a time-lapse by fine-tuning a pretrained denoiser frame to frame (model-blind).",
    notes="""
    Minimises :math:`\\sum_t \\lVert M_t \\odot (f_\\theta(y_t) - W_{t}(y_{t-1})) \\rVert_1` over the
    weights of a pretrained denoiser :math:`f_\\theta`, where :math:`W_t` warps the previous noisy
    frame onto frame :math:`t` with the TV-L1 flow between denoised frames and :math:`M_t` masks
    occlusions and warping errors. No clean data and no noise model are needed: the noise only has to
    be independent between frames. ``full_output=True`` also returns the fine-tuned ``model``.
    """,
    references="""
    .. [1] T. Ehret, A. Davy, J.-M. Morel, G. Facciolo, P. Arias. Model-blind Video Denoising Via
           Frame-to-frame Training. CVPR 2019.
    """,
    examples="""
    >>> import numpy as np
    >>> from napari_ssl_restore import denoise_frame2frame
    >>> rng = np.random.default_rng(0)
    >>> video = (0.5 + 0.1 * rng.standard_normal((3, 32, 32))).astype(np.float32)
    >>> denoise_frame2frame(video, axes="TYX", mode="online", steps_per_frame=2).shape
    (3, 32, 32)
    """,
)
