"""Double-DIP (Gandelsman, Shocher & Irani, CVPR 2019): decompositions by coupled Deep Image Priors.

An image is explained as a mixture of two simpler layers, ``I = m ⊙ y1 + (1 - m) ⊙ y2``, where ``y1``,
``y2`` and the mask ``m`` are each the output of its own DIP generator. Two DIPs explaining two
"simple" layers is easier for the networks than one DIP explaining their mixture, which drives the
decomposition; an exclusion loss (gradients of the two layers should not coincide, over a 3-level
pyramid; Zhang et al. 2018) and a mask regulariser per task complete the objective:

- ``segment``: foreground/background. The mask is pushed towards binary by ``1 / mean|m - 0.5|``;
  optional scribbles (a Labels layer: 1 = foreground, 2 = background) fix the mask where given.
  Without them, when each generator can fit either texture, the mask splits the field into two
  arbitrary smooth regions (benchmark); give scribbles.
- ``separate``: transparent superposition / bleed-through of two structures; the mixing map is kept
  smooth (total variation) and the layers apart (exclusion). From one image this is ill-posed (any
  split of the mixture fits it), and the benchmark shows it. Given a second mixture of the same two
  layers (``second=``, e.g. the other channel of a bleed-through pair, or the paper's two mixtures
  of transparent layers), both mixtures are explained by the same two generators,
  ``I_k = A[k, 0] y1 + A[k, 1] y2``, with a learned non-negative 2×2 mixing matrix ``A`` that is
  constant over the field (this project's choice for spectral bleed-through, where the crosstalk
  is a property of the dyes and filters, in place of a per-pixel mask generator). The outputs are
  each layer as its own mixture holds it (``layer1 = A[0, 0] y1`` in the image's units, ``layer2 =
  A[1, 1] y2`` in the second mixture's), i.e. each channel with the other's bleed-through removed,
  and denoised by the generators' prior. The second mixture's error is weighted by the inverse
  square of its brightness relative to the first, so both count equally however bright each
  channel is. The learned ``A`` also unmixes the data linearly (``unmixed1``, ``unmixed2``):
  every detail and all the noise of the data, against the generators' smoothed, denoised layers;
  the better choice for clean data (benchmark). ``A`` starts diagonally dominant, its second row
  scaled to that brightness; should the fit end with ``y2`` dominating the first mixture, the
  layers are reordered (provenance: ``swapped_planes``).
- ``dehaze``: ``y1`` = clear image, ``m`` = transmission ``t``, ``y2`` = the airlight, a learned
  constant initialised as in DCP. A dark-channel term on ``y1`` (``dcp_weight``) rules out the trivial
  ``t = 1`` solution, ``t`` is smoothed (TV) and kept near DCP's refined transmission
  (``t_prior_weight``, this project's addition: without it the coupled DIPs drift to a darker, worse
  decomposition on the benchmark scenes). DCP's ``t = 1 - ω·dark(I / A)`` depends on the airlight,
  so the prior's haze part ``1 - t`` is rescaled by ``A_DCP / A`` as ``A`` is learned (exact for one
  channel, with the channel mean of ``A`` for colour). At the end ``t`` is refined by a guided filter
  and the image recovered from the haze model, ``J = (I - A) / max(t, t0) + A``. The haze model is
  nearly flat along the airlight and ``t`` rising together, and on the benchmark scenes the learned
  airlight drifts up along it, past the true one on three of four (``learn_airlight=False`` keeps
  DCP's estimate).

The optimisation is the engine's network-as-prior fit (:func:`napari_ssl_restore.engine.prior.fit`)
with three generators, and DCP's operators come from :mod:`napari_ssl_restore.physics.haze`; stacks
stream plane by plane with the generators warm-started.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..core.axes import plane_maps
from ..core.params import param
from ..core.progress import StopRequested
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..engine.prior import FitParams, exclusion_loss, fit, make_code, make_nets, too_early
from ..physics import haze
from ..physics.operators import total_variation
from ._public import public_function

TASKS = ("segment", "separate", "dehaze")
TASK_ITERATIONS = {"segment": 2000, "separate": 3000, "dehaze": 4000}
MIXING_GAIN = 10.0  # the mixing coefficients learn this many times faster than the generators
PRIMARY = {"segment": "labels", "separate": "layer1", "dehaze": "image"}


@dataclasses.dataclass(frozen=True)
class Params(FitParams):
    """Double-DIP settings (Gandelsman et al. 2019; Adam 1e-3, fixed iteration counts)."""

    method_title = "Double-DIP"

    task: Literal["segment", "separate", "dehaze"] = param(
        "segment", "'segment' (foreground/background mask, optional scribble hints), 'separate' "
                   "(two superimposed layers and their mixing map) or 'dehaze' (clear image, "
                   "transmission and airlight).", choices=TASKS)
    max_iter: int = param(0, "Iterations for the first plane; 0 = segment 2000, separate 3000, "
                             "dehaze 4000.", min=0, max=100_000)
    exclusion_weight: float = param(0.1, "Weight of the exclusion loss keeping the two layers' "
                                         "edges apart (paper: ~0.1).", min=0.0, max=100.0,
                                    step=0.01, advanced=True)
    binary_weight: float = param(0.05, "segment: weight of the 1 / mean|m - 0.5| term pushing the "
                                       "mask towards 0/1.", min=0.0, max=100.0, step=0.01,
                                 when={"task": ("segment",)}, advanced=True)
    hint_weight: float = param(1.0, "segment: weight of the scribble constraint (hints= labels: "
                                    "1 = foreground, 2 = background).", min=0.0, max=1000.0,
                               step=0.1, when={"task": ("segment",)}, advanced=True)
    mask_smoothness: float = param(0.01, "Total-variation weight on the mask / mixing map / "
                                         "transmission.", min=0.0, max=100.0, step=0.005, advanced=True)
    dcp_weight: float = param(0.1, "dehaze: weight of the dark-channel term on the clear image "
                                   "(excludes the trivial t = 1 solution).", min=0.0, max=100.0,
                              step=0.01, when={"task": ("dehaze",)}, advanced=True)
    patch_size: int = param(15, "dehaze: dark-channel patch (pixels), also for the airlight's "
                                "initial DCP estimate.", min=1, max=301, when={"task": ("dehaze",)})
    learn_airlight: bool = param(True, "dehaze: refine the DCP airlight estimate during the fit "
                                      "(paper; on the benchmark scenes it overshoots the "
                                      "true airlight); off = keep DCP's estimate.",
                                 when={"task": ("dehaze",)})
    t_prior_weight: float = param(10.0, "dehaze: weight of the DCP transmission (rescaled to the "
                                        "learned airlight) as a prior on t (mean squared "
                                        "difference); 0 = t from the coupled DIPs alone.",
                                  min=0.0, max=1000.0, step=0.1, when={"task": ("dehaze",)},
                                  advanced=True)
    t0: float = param(0.1, "dehaze: lower bound on t when recovering the image.", min=0.001,
                      max=1.0, step=0.01, when={"task": ("dehaze",)}, advanced=True)
    guided_radius: int = param(30, "dehaze: radius of the guided filter refining t; 0 = no "
                                   "refinement.", min=0, max=1000, when={"task": ("dehaze",)},
                               advanced=True)
    threshold: float = param(0.5, "segment: the soft mask above this is labelled foreground (1).",
                             min=0.0, max=1.0, step=0.05, when={"task": ("segment",)})
    # DIP settings that differ from single-image DIP in the paper
    learning_rate: float = param(0.001, "Adam learning rate (paper: 0.001).", min=1e-6, max=1.0,
                                 step=0.0005, advanced=True)
    early_stop: bool = param(False, "Stop automatically on the running variance of the "
                                    "reconstruction (off: the paper's fixed iteration counts).")

    def iterations(self) -> int:
        return self.max_iter or TASK_ITERATIONS[self.task]


# --- losses --------------------------------------------------------------------------------------

def binary_regulariser(m):
    """``1 / mean|m - 0.5|``: large for a grey mask, 2 for a binary one (the paper's mask term)."""
    return 1.0 / ((m - 0.5).abs().mean() + 1e-3)


def dark_channel_loss(x, patch: int):
    """Mean dark channel (min over channels, then a ``patch²`` local minimum) of ``(1, C, H, W)``."""
    import torch.nn.functional as F

    m = x.min(dim=1, keepdim=True).values
    k = min(patch, *m.shape[-2:])
    k -= (k + 1) % 2  # odd
    return (-F.max_pool2d(-m, k, stride=1, padding=k // 2)).mean()


def rescaled_transmission(t, airlight_then, airlight_now):
    """DCP's ``t = 1 - ω·dark(I / A)`` computed with one airlight, for another (numpy or torch).

    The haze part ``1 - t`` scales as ``1 / A``: exact for one channel (and before any refinement
    or clipping), an approximation with channel means for colour.
    """
    return 1 - (1 - t) * (airlight_then / airlight_now)


def _mixing_raw(matrix):
    """The trainable parameter holding a non-negative mixing matrix (inverse of :func:`_mixing`)."""
    import torch

    return torch.log(torch.expm1(matrix)) / MIXING_GAIN


def _mixing(raw):
    """The mixing matrix ``softplus(MIXING_GAIN * raw)``: non-negative, learning ``MIXING_GAIN``
    times faster than the generators under the same Adam step."""
    import torch

    return torch.nn.functional.softplus(MIXING_GAIN * raw)


def unmix(mix1, mix2, matrix, swapped=False):
    """Linear unmixing of two mixtures with a 2×2 mixing matrix, in the mixtures' (scaled) units.

    Solves ``[mix1, mix2] = A [y1, y2]`` per pixel and returns each layer as its own mixture holds
    it, ``(A[0, 0] y1, A[1, 1] y2)``, or ``(A[0, 1] y2, A[1, 0] y1)`` when ``swapped`` (``y2``
    dominates the first mixture). Unlike the generators' outputs this keeps every detail of the
    data, noise included; values may fall below zero where noise exceeds the signal. A
    pseudo-inverse keeps a (near-)singular matrix from blowing up.
    """
    a = np.asarray(matrix, np.float64)
    y = np.tensordot(np.linalg.pinv(a), np.stack([mix1, mix2]).astype(np.float64), axes=1)
    if swapped:
        return (a[0, 1] * y[1]).astype(np.float32), (a[1, 0] * y[0]).astype(np.float32)
    return (a[0, 0] * y[0]).astype(np.float32), (a[1, 1] * y[1]).astype(np.float32)


# --- the generator -------------------------------------------------------------------------------

@dataclasses.dataclass
class _Model:
    """The generators, their codes and noise stream, and the learned extras of one run."""

    nets: list
    codes: list
    gen: object
    out_channels: tuple
    airlight: object = None  # dehaze: the learned airlight
    mixing: object = None  # separate with a second mixture: the raw mixing matrix ...
    init: object = None  # ... its initial value ...
    ratio: float = 1.0  # ... and the second mixture's brightness relative to the first
    extra: list = dataclasses.field(default_factory=list)


def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, hints=None,
        second: Planes | None = None):
    """Fit a Double-DIP decomposition to every plane, each written as it is done."""
    import torch

    device = ctx.torch_device
    n, c = len(planes), planes.c
    task = params.task
    hint_maps = _check_inputs(planes, params, hints, second)
    if second is not None:  # planes the Stop leaves: each mixture keeps its own
        out.fill_from("layer2", second)
        out.fill_from("unmixed2", second)
    model = _build_model(planes, params, ctx, second, device)

    iters = params.plane_iterations(n)
    total = sum(iters)
    airlights = np.full((n, c), np.nan, np.float32)  # planes a Stop leaves have none
    info: dict = {"stop_iterations": [], "stopped": False, "planes_done": 0,
                  "primary_output": PRIMARY[task], "device": str(device)}
    step0 = 0
    for i in range(n):
        g = planes.first + i  # a fresh fit per plane, seeded by its index in the stack
        if i > 0 and not params.warm_start:
            model.nets = make_nets(params, model.out_channels, device, seed=ctx.seed + g)
            if second is not None:
                with torch.no_grad():
                    model.mixing.copy_(_mixing_raw(model.init))
        if g > 0 and not params.warm_start:
            model.gen.manual_seed(ctx.seed + g)
        plane = planes[i]
        plane2 = second[i] if second is not None else None
        target = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None].to(device)
        if plane2 is not None:
            target2 = torch.from_numpy(np.ascontiguousarray(plane2.transpose(2, 0, 1)))[None]
            render, objective = _separate_two(model, params, target, target2.to(device))
        elif task == "dehaze":
            render, objective = _dehaze(model, params, target, plane, device)
        else:
            render, objective = _layers_and_mask(params, target, hint_maps, g, device)
        est, plane_info = yield from fit(model.nets, model.codes, render, objective, params,
                                         iters[i], generator=model.gen, step0=step0, total=total,
                                         label=f"plane {i + 1}/{n}," if n > 1 else "",
                                         watch="recon", extra_parameters=model.extra,
                                         preview_keys=("image", "mask") if task == "dehaze"
                                         else ("layer1", "layer2", "mask"))
        if plane_info["stopped"] and not plane_info["meaningful"]:
            if i == 0:
                raise StopRequested(too_early(plane_info, params))
            info["stopped"] = True  # this plane and the rest: filled by the engine
            break
        out["mask"][i] = _store_plane(est, plane, plane2, model, params, out, i, info, airlights)
        info["stop_iterations"].append(plane_info["stop_iteration"])
        info["planes_done"] = i + 1
        step0 += iters[i]
        if plane_info["stopped"]:
            info["stopped"] = True
            break
    outputs = {}
    if task == "dehaze":
        lead = planes.lead
        outputs["airlight"] = airlights.reshape(lead + (c,)) if lead else airlights[0]
    return MethodResult(outputs, info, primary=PRIMARY[task])


def _check_inputs(planes: Planes, params: Params, hints, second):
    """The scribble maps (``None`` without hints), with ``hints=`` and ``second=`` checked."""
    task = params.task
    hint_maps = None
    if task == "segment" and hints is not None:
        hint_maps = plane_maps(hints, planes.whole.shape, name="hints",
                               hint="paint the scribbles on a Labels layer of the image's size "
                                    "(1 = foreground, 2 = background).")
    if hint_maps is not None and not np.isin(np.unique(hint_maps), (0, 1, 2)).all():
        raise ValueError("hints must be labels 0 (unknown), 1 (foreground) or 2 (background).")
    if second is not None and task != "separate":
        raise ValueError(f"second= (a second mixture of the same two layers) is for "
                         f"task='separate', not {task!r}; drop it or set task='separate'.")
    return hint_maps


def _build_model(planes: Planes, params: Params, ctx: RunContext, second, device) -> _Model:
    """The generators for y1, (y2,) m and their codes, with the airlight or mixing matrix."""
    import torch

    c, two = planes.c, second is not None
    gen = torch.Generator(device=device).manual_seed(ctx.seed)
    out_channels = (c, 1) if params.task == "dehaze" else (c, c) if two else (c, c, 1)
    nets = make_nets(params, out_channels, device, seed=ctx.seed + planes.first)
    codes = [make_code(params, planes.hw, gen, device) for _ in nets]
    model = _Model(nets, codes, gen, out_channels)
    if params.task == "dehaze":
        model.airlight = torch.nn.Parameter(torch.full((1, c, 1, 1), 0.8, device=device))
        if params.learn_airlight:
            model.extra = [model.airlight]
    if two:  # mixture k = A[k, 0] y1 + A[k, 1] y2, A >= 0 constant over the field; initially each
        # mixture mostly holds its own layer, the second row scaled to the second's brightness
        picks = planes.whole.source.sample_indices()  # a chunk: the whole stack's brightness
        mean1 = np.mean([planes.whole[i].mean() for i in picks])
        mean2 = np.mean([second.whole[i].mean() for i in picks])
        model.ratio = ratio = float(np.clip(mean2 / max(float(mean1), 1e-6), 0.05, 20.0))
        model.init = torch.tensor([[1.0, 0.25], [0.25 * ratio, ratio]], device=device)
        model.mixing = torch.nn.Parameter(_mixing_raw(model.init))
        model.extra = [model.mixing]
    return model


def _separate_two(model: _Model, params: Params, target, target2):
    """Two mixtures of the same two layers through a learned constant mixing matrix."""
    import torch

    mixing, ratio = model.mixing, model.ratio

    def render(outs):
        y1, y2 = outs
        a = _mixing(mixing)
        p1, q1 = a[0, 0] * y1, a[0, 1] * y2  # the two layers as mixture 1 holds them
        p2, q2 = a[1, 0] * y1, a[1, 1] * y2
        return {"recon": p1 + q1, "recon2": p2 + q2, "layer1": p1, "layer2": q2,
                "mask": (p1.mean(1, keepdim=True) / (p1 + q1).mean(1, keepdim=True)
                         .clamp_min(1e-6)).clamp(0, 1),
                "other1": q1, "other2": p2}  # in case y2 ends up dominating mixture 1

    def objective(r):
        return (torch.mean((r["recon"] - target) ** 2)
                + torch.mean((r["recon2"] - target2) ** 2) / ratio ** 2  # equal say
                + params.exclusion_weight * exclusion_loss(r["layer1"], r["layer2"]))

    return render, objective


def _dehaze(model: _Model, params: Params, target, plane, device):
    """Clear image and transmission under the haze model, the airlight reset to DCP's estimate."""
    import torch

    airlight, c = model.airlight, plane.shape[-1]
    planar = np.ascontiguousarray(plane.transpose(2, 0, 1))
    _, t_dcp, a0 = haze.dehaze_plane(planar, patch_size=params.patch_size,
                                     refine=params.guided_radius > 0,
                                     guided_radius=max(params.guided_radius, 1),
                                     t0=params.t0)
    t_dcp = torch.from_numpy(t_dcp)[None, None].to(device)
    with torch.no_grad():
        airlight.copy_(torch.from_numpy(a0).view(1, c, 1, 1))

    def render(outs):
        j, t = outs
        return {"recon": j * t + airlight.clamp(0, 1) * (1 - t), "image": j, "mask": t}

    a0_mean = float(np.mean(a0))

    def objective(r):
        loss = (torch.mean((r["recon"] - target) ** 2)
                + params.dcp_weight * dark_channel_loss(r["image"], params.patch_size)
                + params.mask_smoothness * total_variation(r["mask"]))
        if params.t_prior_weight > 0:
            prior = rescaled_transmission(t_dcp, a0_mean,
                                          airlight.clamp(1e-3, 1).mean()).clamp(0, 1)
            loss = loss + params.t_prior_weight * torch.mean((r["mask"] - prior) ** 2)
        return loss

    return render, objective


def _layers_and_mask(params: Params, target, hint_maps, g: int, device):
    """Two layers and a mask (segment, or separate from one image)."""
    import torch

    fg = bg = None
    if hint_maps is not None:  # scribbles: 1 = foreground, 2 = background
        fg = torch.from_numpy((hint_maps[g] == 1).astype(np.float32))[None, None]
        bg = torch.from_numpy((hint_maps[g] == 2).astype(np.float32))[None, None]
        fg, bg = fg.to(device), bg.to(device)

    def render(outs):
        y1, y2, m = outs
        return {"recon": m * y1 + (1 - m) * y2, "layer1": y1, "layer2": y2, "mask": m}

    def objective(r):
        loss = torch.mean((r["recon"] - target) ** 2)
        loss = loss + params.exclusion_weight * exclusion_loss(r["layer1"], r["layer2"])
        loss = loss + params.mask_smoothness * total_variation(r["mask"])
        if params.task == "segment":
            loss = loss + params.binary_weight * binary_regulariser(r["mask"])
            if fg is not None:
                n_hint = (fg.sum() + bg.sum()).clamp_min(1.0)
                miss = fg * (1 - r["mask"]) ** 2 + bg * r["mask"] ** 2
                loss = loss + params.hint_weight * miss.sum() / n_hint
        return loss

    return render, objective


def _store_plane(est, plane, plane2, model: _Model, params: Params, out: Outputs, i: int,
                 info: dict, airlights):
    """Write plane ``i``'s results but the mask: clear image and airlight (dehaze), or layers
    (reordered should ``y2`` dominate) and labels or image; its mask."""
    mask = est["mask"][0, 0].float().cpu().numpy()
    if params.task == "dehaze":
        a = model.airlight.detach().clamp(0, 1).view(plane.shape[-1]).cpu().numpy()
        if params.guided_radius > 0:
            planar = np.ascontiguousarray(plane.transpose(2, 0, 1))
            mask = haze.fast_guided_filter(haze.gray(planar), mask.astype(np.float32),
                                           params.guided_radius, 1e-3, 1)
        mask = np.clip(mask, 0, 1)
        j = (plane - a) / np.maximum(mask, params.t0)[..., None] + a
        out["image"][i] = np.clip(j, 0, 1)
        airlights[i] = a
        return mask
    first, second_key = "layer1", "layer2"
    two = plane2 is not None
    if two:
        a = _mixing(model.mixing).detach().cpu().numpy()
        info["mixing"] = a.tolist()
        if a[0, 0] * a[1, 1] < a[0, 1] * a[1, 0]:  # y2 dominates mixture 1: reorder
            first, second_key, mask = "other1", "other2", 1 - mask
            info.setdefault("swapped_planes", []).append(i)
    out["layer1"][i] = est[first][0].permute(1, 2, 0).float().cpu().numpy()
    out["layer2"][i] = est[second_key][0].permute(1, 2, 0).float().cpu().numpy()
    if two:
        out["unmixed1"][i], out["unmixed2"][i] = unmix(plane, plane2, a,
                                                       swapped=first == "other1")
    if params.task == "segment":
        out["labels"][i] = (mask > params.threshold).astype(np.int32)
    else:
        out["image"][i] = est["recon"][0].permute(1, 2, 0).float().cpu().numpy()
    return mask


def _demo() -> list[dict]:
    from ..data import hazy_scene

    s = hazy_scene()
    small = s["image"][::8, ::8]
    return [{"image": small, "axes": "YXC", "name": "hazy motorcycle (1/8 size)",
             "params": {"task": "dehaze", "max_iter": 300, "channels": 32, "depth": 4}}]


SPEC = MethodSpec(
    name="double-dip",
    title="Double-DIP (Gandelsman et al. 2019): segmentation, layer separation, dehazing",
    task="decompose",
    params=Params,
    run=run,
    function="decompose_double_dip",
    outputs=(
        Output("image", "dehaze: the clear image; separate: the reconstruction m*y1 + (1-m)*y2."),
        Output("labels", "segment: the thresholded mask (1 = foreground, 0 = background).",
               kind="labels"),
        Output("layer1", "segment/separate: the first layer (foreground)."),
        Output("layer2", "segment/separate: the second layer (background)."),
        Output("unmixed1", "separate with second=: the image linearly unmixed with the learned "
                           "matrix (all of the data's detail and noise; layer1 is also "
                           "denoised). Best on clean, low-noise data. Integer input types "
                           "come back clipped at 0."),
        Output("unmixed2", "separate with second=: the second mixture linearly unmixed, in its "
                           "units."),
        Output("mask", "The soft mask / mixing map / transmission in [0, 1].", kind="map"),
        Output("airlight", "dehaze: the learned airlight, in input units.", kind="value",
               layer=False),
    ),
    inputs=(ExtraInput("hints", "segment: scribbles as labels (1 = foreground, 2 = background, "
                                "0 = unknown), the image's shape without C or one Y X plane.",
                       layer_kind="labels", when=(("task", ("segment",)),)),
            ExtraInput("second", "separate: a second mixture of the same two layers (e.g. the other "
                                 "channel of a bleed-through pair), same shape as the image; the "
                                 "layers then come out free of each other's bleed-through.",
                       like_image=True, when=(("task", ("separate",)),))),
    scaling="range",
    uses_torch=True,
    demo=_demo,
    primary_of=lambda params: PRIMARY[params.task],
    linked_planes=lambda p: ("warm_start: each plane starts from the previous plane's networks (set "
                             "warm_start=False for independent planes)" if p.warm_start else ""),
)

decompose_double_dip = public_function(
    SPEC,
    summary="Decompose an image into two layers and a mask with coupled Deep Image Priors.",
    notes="""
    Minimises :math:`\\lVert I - (m \\odot y_1 + (1 - m) \\odot y_2) \\rVert^2` plus an exclusion
    loss on :math:`\\nabla y_1, \\nabla y_2` and a mask regulariser, each of :math:`y_1, y_2, m` the
    output of its own DIP. The primary output depends on ``task``: the label mask (segment), the
    first layer (separate) or the dehazed image (dehaze); ``full_output=True`` returns all of them.
    """,
    references="""
    .. [1] Y. Gandelsman, A. Shocher, M. Irani. "Double-DIP": Unsupervised Image Decomposition via
           Coupled Deep-Image-Priors. CVPR 2019.
    .. [2] X. Zhang, R. Ng, Q. Chen. Single Image Reflection Separation with Perceptual Losses.
           CVPR 2018 (the exclusion loss).
    """,
    examples="""
    >>> import numpy as np
    >>> from napari_ssl_restore import decompose_double_dip
    >>> img = np.random.default_rng(0).random((24, 24)).astype(np.float32)
    >>> labels = decompose_double_dip(img, task="segment", max_iter=3, channels=8, depth=2)
    >>> labels.shape, labels.dtype
    ((24, 24), dtype('int32'))
    """,
)
