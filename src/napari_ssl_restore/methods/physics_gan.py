"""Physics-based GAN (Pan, Dong, Ren, Lin, Tang, Yang; TPAMI 2020): restore through a known operator
with an adversarial prior learned from *unpaired* clean examples.

A generator ``G`` maps the degraded image ``y`` to an estimate ``x = G(y)`` under two pressures:

- **physics**: pushed back through the known degradation ``H`` the estimate must reproduce the
  input, ``L1(H(G(y)), y)`` weighted 10 as the authors do — ``H`` is a PSF blur (``deconv``: the
  given PSF or a Gaussian of ``psf_sigma``), an anti-aliased ×2/×4 downsampling (``sr``) or the
  identity (``denoise``), the operators Deep Image Prior uses (:mod:`napari_ssl_restore.core.operators`);
- **adversarial**: a PatchGAN discriminator trained on the clean examples (``clean=``: confocal or
  deconvolved images of similar samples — any size, not registered to ``y``) must not tell ``G(y)``
  from them (LSGAN, one-sided label smoothing, a pool of past fakes).

Either term alone fails in its own way: physics alone has many solutions (it amplifies noise), the
GAN alone invents plausible structure unrelated to ``y``. The second output, the **residual map**
``|H(G(y)) - y|``, shows where the estimate does not explain the data.

Training uses random crops of ``y`` and of the clean examples (flips and 90° rotations, on the
device), Adam 2e-4 with β1 = 0.5, the engine's one loop (the discriminator steps after each generator
step); prediction streams every plane through the engine's batched predictor with the exponential
moving average of the generator's weights. The checkpoint kept is the one with the lowest physics
residual on a fixed set of crops (checked every ``check_every`` steps); when even that explains the
input less well than the input itself (``|H(y) - y|``), the provenance says so (``warning``). A NaN
loss ends training with the best checkpoint, saying so.

Deviations: the generator is CycleGAN's ResNet generator with resize-convolution upsampling and a
global skip (starts as the identity / nearest upsampling), without normalisation so tiles of a
large plane agree exactly (instance norm, as in the authors' code, makes them disagree); smaller
defaults (32 features, 6 blocks, 64² crops) so it trains on a laptop CPU; the authors' optional second
discriminator on ``H(G(y))`` vs ``y`` and their paired L1 term are not included.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ..engine.adversarial import (TRAIN, UnpairedParams, clean_examples,
                                  trains_on_the_stack)
from ..engine.planes import Outputs, Planes
from ._public import public_function

logger = logging.getLogger(__name__)

TASKS = ("deconv", "sr", "denoise")


@dataclasses.dataclass(frozen=True)
class Params(UnpairedParams):
    """Physics-based GAN settings (Pan et al. 2020; pytorch-CycleGAN defaults where they apply)."""

    method_title = "Physics-GAN"

    patch_size: int = param(64, "Side of the training crops of the input (authors: 256).",
                            min=16, max=1024, when=TRAIN, advanced=True)
    batch_size: int = param(4, "Crops per step.", min=1, max=256, when=TRAIN, advanced=True)
    check_every: int = param(100, "Steps between checks of the physics residual on fixed crops "
                                  "(the best checkpoint is kept) and previews.", min=1,
                             max=100_000, when=TRAIN, advanced=True)
    task: Literal["deconv", "sr", "denoise"] = param(
        "deconv", "The known degradation H: 'deconv' (PSF blur: psf= or a Gaussian of psf_sigma), "
                  "'sr' (anti-aliased downsampling by sr_factor), 'denoise' (identity).",
        choices=TASKS)
    psf_sigma: float = param(2.0, "deconv: std (pixels) of the Gaussian PSF when no psf= is given.",
                             min=0.3, max=20.0, step=0.1, when=(("task", ("deconv",)),))
    sr_factor: int = param(2, "sr: upsampling factor (2 or 4).", min=2, max=4,
                           when=(("task", ("sr",)),))
    physics_weight: float = param(10.0, "Weight of L1(H(G(y)), y) against the adversarial term "
                                        "(authors: 10).", min=0.0, max=1e4, step=1.0, when=TRAIN)
    adversarial_weight: float = param(1.0, "Weight of the adversarial term (0: physics only, "
                                           "for the ablation).", min=0.0, max=1e3, step=0.1,
                                      when=TRAIN, advanced=True)
    features: int = param(32, "Generator channels of its first layer (CycleGAN: 64).", min=4,
                          max=256, when=TRAIN, advanced=True)
    blocks: int = param(6, "Generator residual blocks (CycleGAN: 9 at 256², 6 at ≤128²).", min=1,
                        max=16, when=TRAIN, advanced=True)
    disc_scales: int = param(1, "Discriminators at 1, 1/2, 1/4... of the resolution.", min=1,
                             max=3, when=TRAIN, advanced=True)

    def __post_init__(self):
        if self.task == "sr" and self.sr_factor not in (2, 4):
            raise ValueError(f"Physics-GAN: sr_factor must be 2 or 4; got {self.sr_factor}.")
        super().__post_init__()

    @property
    def zoom(self) -> int:
        return self.sr_factor if self.task == "sr" else 1


# --- the operator ----------------------------------------------------------------------------------

def make_operator(params: Params, psf, device):
    """``H`` for the task, on ``(N, C, H, W)`` tensors."""
    from ..core.operators import blur, downsample, psf_kernel

    if params.task == "deconv":
        kernel = psf_kernel(psf, params.psf_sigma, device)
        return lambda x: blur(x, kernel)
    if params.task == "sr":
        return lambda x: downsample(x, params.sr_factor)
    return lambda x: x


# --- the generator -------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None, psf=None):
    """Train G (or load it), then restore every plane and its residual map, streamed."""
    import torch

    from ..core.device import resolve_device
    from ..core.models import build
    from ..engine.adversarial import keep_trained, saved_generator, unpaired_data
    from ..engine.predict import Predictor, predict_after_training
    from ..engine.train import seeded_init
    from ..nets.gan import ResnetGenerator

    device = resolve_device(ctx.device)
    rng = np.random.default_rng(ctx.seed)
    c, n, zoom = planes.c, len(planes), params.zoom
    operator = make_operator(params, psf, device)
    ckpt = saved_generator(params.model, c, zoom)
    if ckpt is not None:
        net = build(ckpt, device)
    else:
        with seeded_init(ctx.seed):
            net = ResnetGenerator(c, c, params.features, params.blocks, scale=zoom, norm="none")
        net = net.to(device)
    info: dict = {"device": str(device), "trained_steps": 0, "stopped": False, "zoom": zoom}
    total, stopped = 0, False
    if params.mode == "train":
        y_sampler, x_sampler, preview_crop = unpaired_data(
            planes, clean, patch=params.patch_size, zoom=zoom, device=device, rng=rng,
            title="Physics-GAN", rescale=lambda x: _in_input_units(x, operator))
        total = params.steps
        fit = yield from _train(net, operator, y_sampler, x_sampler, params, ctx, rng,
                                total=total, grand_total=total + n, preview_crop=preview_crop)
        del y_sampler, x_sampler
        stopped = fit["stopped"]
        net, ckpt_out = keep_trained(fit, info, method="physics-gan",
                                     architecture="resnet-generator", params=params,
                                     seed=ctx.seed, resumed=ckpt is not None)
    else:
        ckpt_out = ckpt
    net.eval()
    predictor = Predictor(net, device, tile=params.tile_size, overlap=params.tile_overlap,
                          scale=zoom)

    def write(i: int, plane: np.ndarray) -> None:
        out["image"][i] = plane
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None].to(device)
            y = torch.from_numpy(np.ascontiguousarray(planes[i].transpose(2, 0, 1)))[None]
            residual = (operator(x).cpu() - y).abs().mean(1)[0].numpy()
        if zoom > 1:  # on the output's grid, so the two layers overlay
            residual = np.repeat(np.repeat(residual, zoom, axis=0), zoom, axis=1)
        out["residual"][i] = residual * ctx.scale  # in the input's intensity units

    done, stopped = yield from predict_after_training(predictor, planes, write, step0=total,
                                                      stopped=stopped, verb="restoring")
    info.update(planes_done=done, stopped=stopped)
    return MethodResult({}, info, {"model": ckpt_out})


def _train(net, operator, y_sampler, x_sampler, params: Params, ctx: RunContext, rng, *,
           total: int, grand_total: int, preview_crop: np.ndarray):
    """The adversarial training on the engine's loop; returns the generator kept and statistics."""
    import torch

    from ..engine.adversarial import (EMA, Critic, Keeper, Terms, generator_loss, patch_layers,
                                      reporter)
    from ..engine.predict import Predictor
    from ..engine.train import optimise, seeded_init
    from ..nets.gan import MultiScaleDiscriminator

    device = y_sampler.fields[0].device
    c = y_sampler.fields[0].shape[1]
    with seeded_init(ctx.seed + 1):
        disc = MultiScaleDiscriminator(c, params.disc_features,
                                       patch_layers(params.patch_size * params.zoom),
                                       params.disc_scales, spectral=params.spectral_norm)
    critic = Critic(disc.to(device), lr=params.learning_rate, rng=rng)
    ema = EMA(net, params.ema_decay)
    opt = torch.optim.Adam(net.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
    (val,) = y_sampler(max(4, params.batch_size))  # fixed crops: the physics residual's yardstick
    keeper = Keeper(ema.average, score=lambda model: (operator(model(val)) - val).abs().mean())
    terms, state = Terms(), {}

    def step(it: int):
        (y,) = y_sampler(params.batch_size)
        (x,) = x_sampler(params.batch_size)
        fake = net(y)
        state["fake"], state["real"] = fake, x
        loss = terms("physics", (operator(fake) - y).abs().mean(), params.physics_weight)
        if params.adversarial_weight:
            loss = loss + terms("G", generator_loss(critic.judge(fake)), params.adversarial_weight)
        return loss

    def after_step(it: int) -> None:
        if params.adversarial_weight:
            critic.update(state["real"], state["fake"])
        ema.update()
        state.pop("fake")

    describe = reporter(total, terms, {"clean": critic},
                        extra=lambda: {"physics_residual": keeper.last})

    preview_net = Predictor(ema.average, device, scale=params.zoom)

    def preview(it: int):
        return preview_net(preview_crop[None])[0]

    with torch.inference_mode():  # the input's own residual |H(y) - y|, for reference
        start = float((operator(val) - val).abs().mean()) if params.zoom == 1 else float("nan")
    net.train()
    loop = yield from optimise(step, opt, total, after_step=after_step, finished=keeper.check,
                               check_every=params.check_every, describe=describe,
                               preview=preview, preview_every=params.check_every,
                               total=grand_total)
    if not keeper.diverged:
        keeper.check(loop.steps)  # score the final weights too
    kept = keeper.restore("Physics-GAN")
    result = {"net": kept, "steps": loop.steps, "stopped": loop.stopped, "nan": keeper.diverged, "best_step": keeper.best_step,
              "physics_residual": keeper.best, "input_residual": start}
    if keeper.best > start:  # the estimate explains y worse than y itself does
        result["warning"] = (f"the restored image explains the input less well than the input "
                             f"itself (physics residual {keeper.best:.3g} against "
                             f"{start:.3g}): the adversarial term dominates; raise "
                             "physics_weight or train longer, and check the residual map")
        logger.warning("physics-gan: %s", result["warning"])
    return result


def _in_input_units(examples, operator):
    """Clean examples rescaled so that *degraded* they span what the input spans: the input is
    normalised by its percentiles, and a blur lowers peaks, so clean examples normalised by their
    own percentiles would be dimmer at their peaks than the sharp image the physics term asks for,
    and the two terms would pull against each other. Percentiles (0.1, 99.9) of ``H(examples)``
    map to 0 and 1, like the input's."""
    import torch

    with torch.inference_mode():
        degraded = torch.cat([operator(examples[k:k + 8]) for k in range(0, len(examples), 8)])
        flat = degraded.flatten()[:: max(1, degraded.numel() // 2**22)].float()
        lo, hi = torch.quantile(flat, torch.tensor([0.001, 0.999], device=flat.device)).tolist()
    return (examples - lo) / max(hi - lo, 1e-6)


SPEC = MethodSpec(
    name="physics-gan",
    title="Physics-based GAN (Pan et al. 2020): restore through a known operator, adversarial "
          "prior from unpaired clean examples",
    task="restore",
    params=Params,
    run=run,
    function="restore_physics_gan",
    outputs=(Output("image", "The restored image (sr: Y and X multiplied by sr_factor)."),
             Output("residual", "|H(G(y)) - y| in the input's intensity units, mean over "
                                "channels: where the estimate does not explain the data (sr: "
                                "each input pixel repeated onto the output's grid).",
                    kind="map")),
    inputs=(
        clean_examples("Clean examples of similar samples (confocal, deconvolved)"),
        ExtraInput("psf", "Point-spread function (2-D) for task 'deconv'; a Gaussian of "
                          "psf_sigma when omitted.", when=(("task", ("deconv",)),)),
    ),
    scaling="percentile",
    uses_torch=True,
    linked_planes=trains_on_the_stack,
    zoom_of=lambda p: p.zoom,
)

restore_physics_gan = public_function(
    SPEC,
    summary="Restore through a known operator with an adversarial prior (Physics-based GAN).",
    notes="""
    Minimises :math:`\\lambda\\,\\|H(G(y)) - y\\|_1 + \\mathcal{L}_{adv}(G(y))` over the generator
    :math:`G`, where :math:`H` is the known degradation and the adversarial term comes from a
    PatchGAN discriminator trained to tell :math:`G(y)` from *unpaired* clean examples (``clean=``).
    ``full_output=True`` also returns the residual map and the trained ``model`` checkpoint.
    """,
    references="""
    .. [1] J. Pan, J. Dong, Y. Liu, J. Zhang, J. Ren, J. Tang, Y.-W. Tai, M.-H. Yang. Physics-based
       generative adversarial models for image restoration and beyond. IEEE TPAMI 43(7), 2021
       (online 2020).
    .. [2] J.-Y. Zhu, T. Park, P. Isola, A. A. Efros. Unpaired image-to-image translation using
       cycle-consistent adversarial networks. ICCV 2017.
    """,
)
