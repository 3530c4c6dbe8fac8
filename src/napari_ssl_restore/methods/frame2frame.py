"""Frame2Frame (Ehret, Davy, Morel, Facciolo, Arias; CVPR 2019): model-blind video denoising.

A pretrained denoiser is fine-tuned on the video itself. Consecutive frames show (nearly) the same
scene with independent noise, so once the previous noisy frame is warped onto the current one by the
optical flow it is a noisy *target* for the current noisy frame, as in Noise2Noise. The flow is
computed between the denoised frames (TV-L1, in torch on the network's device, frame pairs batched:
:mod:`napari_ssl_restore.physics.flow`; scikit-image's on the CPU with ``flow='tvl1-skimage'``), the
warp is a bilinear backward warp (``grid_sample``; a bicubic one scored 0.14–0.34 dB lower without
fusion on 5 of the benchmark's 6 videos), and pixels where the flow cannot be trusted —
occlusions (large flow divergence), large warping error between the denoised frames, pixels warped
from outside the frame — are masked out of the L1 loss (dilated). Adam, lr 5e-5, as in the paper.

- ``mode='online'``: sweep forward through T; each frame gets ``steps_per_frame`` steps (paper: 20)
  on its pair with the previous restored frame and is then restored by the model as it is. The first
  frame has no predecessor and is restored by the starting model.
- ``mode='offline'``: every frame is paired with *both* neighbours (the previous and the next noisy
  frame, each warped onto it; twice the targets of a forward-only pairing), flows from the starting
  model's denoised video, ``epochs`` × frames fine-tuning steps, then every frame is restored by the
  final model. A movie too long for the training memory trains on pairs spread evenly over it (all
  of them in a movie of a few hundred 512² frames); every frame is restored. With ``early_stop``
  (default) 5 % of the pixels, in blocks, are held out of the targets and the masked L1 there
  guards the fine-tuning: it stops when that loss stays above the starting model's, and ends on
  the best weights checked (the starting model's included) when the final ones score worse, so a
  strong pretrained model is not undone (:class:`~napari_ssl_restore.engine.video.HeldOut`).

Addition: the restored frames are fused over time (``fusion_radius``, default 2; 0 is the method as
published): each is averaged with its restored neighbours, warped onto it by the flow between them,
where the flow explains them (:class:`~napari_ssl_restore.engine.fusion.Fusion`).

Deviation: training uses random crops (``patch_size``, ``batch_size``) of the frame pair instead of
the whole frame, so large frames fit on a CPU; the starting model is this project's shipped
denoiser (a noise-aware residual U-Net trained offline by ``scripts/train_denoiser.py``; its noise
map is measured on the movie once and kept while fine-tuning), not the authors' DnCNN weights;
``model="dncnn-blind-gray"`` starts from the first release's blind DnCNN.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.progress import Step, StopRequested
from ..core.registry import MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..engine.video import OFFLINE, ONLINE, VideoParams, demo_samples
from ._public import public_function

FLOWS = ("tvl1", "tvl1-skimage", "ilk")


@dataclasses.dataclass(frozen=True)
class Params(VideoParams):
    """Frame2Frame settings (Ehret et al. 2019)."""

    method_title = "Frame2Frame"

    steps_per_frame: int = param(20, "online: fine-tuning steps on each frame (paper: 20).",
                                 min=1, max=100_000, when=ONLINE)
    epochs: int = param(10, "offline: fine-tuning length, in steps per frame (each frame is "
                            "paired with both neighbours).", min=1, max=100_000, when=OFFLINE)
    early_stop: bool = param(True, "offline: hold 5% of the pixels (blocks) out of the training "
                                   "targets and watch the loss there: stop if fine-tuning makes "
                                   "it worse than the starting model's, and never end on weights "
                                   "that score worse than the start.",
                             when=OFFLINE, advanced=True)
    learning_rate: float = param(5e-5, "Adam learning rate (paper: 5e-5).", min=1e-8, max=1.0,
                                 step=1e-5, advanced=True)
    flow: Literal["tvl1", "tvl1-skimage", "ilk"] = param(
        "tvl1", "Optical flow between denoised frames: 'tvl1' (TV-L1 as in the paper, computed on "
                "the same device as the network, frame pairs batched), 'tvl1-skimage' "
                "(scikit-image's TV-L1 on the CPU, the reference) or 'ilk' (scikit-image's "
                "iterative Lucas-Kanade, less accurate at motion boundaries).",
        choices=FLOWS, advanced=True)
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


def _masked_l1(pred, target, mask):
    return (mask * (pred - target).abs()).sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


# --- optical flow, warping and occlusions ----------------------------------------------------------

PAIR_BATCH = 8
"""Frame pairs whose flows, warps and masks are computed in one batch on a GPU (offline); one at a
time on a CPU, where batching was measured slower per pair (``benchmarks/bench_flow.py``)."""


def optical_flow(reference: np.ndarray, moving: np.ndarray, method: str = "tvl1", device="cpu"):
    """Flows ``(N, 2, H, W)`` (rows, columns), ``moving[r + v_r, c + v_c] ≈ reference[r, c]``, as a
    tensor on ``device``, between the channel means of ``(N, H, W, C)`` (denoised) frames.

    ``'tvl1'``: TV-L1 in torch on ``device`` (:func:`..physics.flow.tvl1_pairs`: all pairs at once
    on a GPU, one by one on a CPU);
    ``'tvl1-skimage'`` / ``'ilk'``: scikit-image's TV-L1 (Zach, Pock, Bischof 2007) / iterative
    Lucas-Kanade on the CPU, pair by pair.
    """
    import torch

    from ..engine.train import to_device
    from ..physics.flow import tvl1_pairs

    if method == "tvl1":
        return tvl1_pairs(to_device(reference, device).mean(1), to_device(moving, device).mean(1))
    if method not in FLOWS:
        raise ValueError(f"unknown flow method {method!r}; use one of {', '.join(FLOWS)}.")
    from skimage import registration

    solve = (registration.optical_flow_tvl1 if method == "tvl1-skimage" else
             lambda a, b: registration.optical_flow_ilk(a, b, radius=7))
    flows = [solve(a.mean(axis=-1), b.mean(axis=-1)) for a, b in zip(reference, moving, strict=False)]
    return torch.from_numpy(np.stack(flows).astype(np.float32)).to(device)


def _pairs(noisy_other, denoised, denoised_other, params, device):
    """Targets (the neighbouring noisy frames warped onto these frames) and masks, ``(K, C, H, W)``
    and ``(K, 1, H, W)`` on ``device``, from ``(K, H, W, C)`` neighbouring noisy frames and the
    denoised frames and neighbouring frames."""
    from ..engine.train import to_device
    from ..physics.flow import occlusion_mask, warp

    flow = optical_flow(denoised, denoised_other, params.flow, device)
    warped, inside = warp(to_device(noisy_other, device), flow)
    warped_den, _ = warp(to_device(denoised_other, device), flow)
    mask = occlusion_mask(flow, warped_den, to_device(denoised, device), inside,
                          divergence=params.divergence_threshold,
                          warp_error=params.warp_error_threshold, dilation=params.mask_dilation)
    return warped, mask


# --- the generator ---------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs):
    """Fine-tune the starting denoiser on the time-lapse by Frame2Frame, then restore it."""
    import time

    import torch

    from ..engine.train import TRAIN_BYTES, PatchSampler, planes_within, spread, to_device
    from ..engine.video import HeldOut, finish, online, predict_some, restore_all, start, tune

    if planes.n_frames < 2:
        raise ValueError("Frame2Frame needs at least 2 frames along T to pair them; got 1. Use "
                         "dncnn or restore-from-restored for a single image.")
    r = start(planes, params, ctx)
    depth, n = planes.n_depth, len(planes)
    flow_seconds = 0.0

    if params.mode == "online":
        def make_sampler(i, previous):
            nonlocal flow_seconds
            if previous is None:  # the first frame: nothing to pair it with
                return None
            current = r.predict(planes[i])
            tf = time.perf_counter()
            target, mask = _pairs(planes[i - depth][None], current[None], previous[None],
                                  params, r.device)
            flow_seconds += time.perf_counter() - tf
            fields = [to_device(planes[i][None], r.device), target, mask]
            return PatchSampler(fields, [(0, 0, 0)], params.patch_size, r.rng)

        r.info.update((yield from online(r, out, params, make_sampler=make_sampler,
                                         loss_fn=_masked_l1, lr=params.learning_rate,
                                         steps_per_frame=params.steps_per_frame)))
    else:
        # every frame with both neighbours; a long movie trains on pairs spread over it, as many
        # as TRAIN_BYTES holds (noisy, target, mask per pair)
        pairs = [(t, s, p) for t in range(planes.n_frames) for s in (t - 1, t + 1)
                 if 0 <= s < planes.n_frames for p in range(depth)]
        plane_bytes = int(np.prod(planes.hw)) * planes.c * 4
        chosen = [pairs[k] for k in spread(len(pairs), planes_within(TRAIN_BYTES, plane_bytes, 3))]
        needed = sorted({planes.frame_index(t, p) for t, _, p in chosen}
                        | {planes.frame_index(s, p) for _, s, p in chosen})
        trained = len({(t, p) for t, _, p in chosen})
        steps = params.epochs * trained  # an epoch: as many steps as frames trained on
        total = len(needed) + len(chosen) + steps + n
        denoised, stopped = yield from predict_some(
            r, needed, step0=0, total=total, label="denoising with the starting model:",
            stoppable=True)
        if stopped:
            raise StopRequested()  # nothing fine-tuned yet: the run ends without a result
        noisy, targets, masks = [], [], []
        per_call = PAIR_BATCH if r.device.type == "cuda" else 1
        for k0 in range(0, len(chosen), per_call):  # flows, warps and masks batched by pairs
            group = chosen[k0:k0 + per_call]
            now = [planes.frame_index(t, p) for t, _, p in group]
            other = [planes.frame_index(s, p) for _, s, p in group]
            noisy.append(to_device(np.stack([planes[i] for i in now]), r.device))
            tf = time.perf_counter()
            target, mask = _pairs(np.stack([planes[j] for j in other]),
                                  np.stack([denoised[i] for i in now]),
                                  np.stack([denoised[j] for j in other]), params, r.device)
            flow_seconds += time.perf_counter() - tf
            targets.append(target)
            masks.append(mask)
            yield Step(len(needed) + k0 + len(group), total,
                       f"optical flow {k0 + len(group)}/{len(chosen)}")
        del denoised
        fields = [torch.cat(noisy), torch.cat(targets), torch.cat(masks)]
        del noisy, targets, masks
        watch = None
        if params.early_stop:
            watch = HeldOut(r.den, fields, _masked_l1, r.rng, steps=steps, patch=params.patch_size)
            fields[2] = watch.train_mask
        sampler = PatchSampler(fields, [(k, k, k) for k in range(len(chosen))], params.patch_size,
                               r.rng)
        opt = torch.optim.Adam(r.den.parameters(), lr=params.learning_rate)
        k0 = len(needed) + len(chosen)
        loop = yield from tune(r, opt, sampler, _masked_l1, steps, params.batch_size, step0=k0,
                               total=total, label="fine-tuning step", watch=watch)
        if watch is not None:
            r.info.update(watch.report())
        del fields, sampler
        done, stopped_late = yield from restore_all(
            r, out, params, step0=k0 + steps, total=total, stoppable=not loop.stopped)
        r.info.update(steps=loop.steps, final_loss=loop.loss, stopped=loop.stopped or stopped_late,
                      planes_done=done, pairs=len(chosen), pairs_total=len(pairs))
    r.info["flow_seconds"] = round(flow_seconds, 3)
    return finish(r, params, ctx, method="frame2frame")


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
    linked_planes=lambda p: ("Frame2Frame fine-tunes the denoiser on the frames of the movie "
                             "(fine-tune once with save_model=, then apply it with dncnn and "
                             "model=)"),
    context_frames=1,
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
