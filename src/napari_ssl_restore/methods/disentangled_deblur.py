"""Disentangled deblurring (Lu, Chen, Chellappa; CVPR 2019): deblurring learned from *unpaired*
blurred and sharp images by splitting an image into content and blur.

Networks (:mod:`napari_ssl_restore.nets.gan`): content encoders ``E_B`` (blurred domain) and ``E_S``
(sharp domain) that share their last residual block, so both map into one content space; a blur
encoder ``E_z`` giving an 8-d Gaussian code (mean, log-variance) of a blurred image's blur; a
re-blurring decoder ``G_B(content, z)`` and a deblurring decoder ``G_S(content)``. With ``b`` a crop of
the input and ``s`` a crop of the sharp examples (``clean=``, any size, not registered):

- ``s_b = G_S(E_B(b))`` (deblurred), ``b_s = G_B(E_S(s), z)`` with ``z ~ E_z(b)`` (re-blurred);
- cross-cycle: ``b^ = G_B(E_S(s_b), z')`` with ``z' ~ E_z(b_s)`` and ``s^ = G_S(E_B(b_s))``,
  ``L1(b^, b) + L1(s^, s)`` weight ``cycle_weight`` (10);
- KL divergence of the blur code from N(0, I), weight ``kl_weight`` (0.01): the code is kept small
  so that it cannot carry content;
- adversarial (LSGAN, multi-scale PatchGAN): ``s_b`` against the sharp examples, ``b_s`` against the
  input's crops;
- perceptual: features of ``s_b`` close to those of ``b`` (content preserved), weight
  ``perceptual_weight`` (0.1);
- added for microscopy: when the PSF is known (``psf=`` or ``psf_sigma``), the physics term
  ``L1(blur(s_b), b)`` weight ``physics_weight``, and the checkpoint kept is the one whose estimate
  best explains the input through it (else the last).

The re-blurring decoder by default (``reblur="physics"``) is the blur itself: the blur code ``z ~
E_z(b)`` is decoded into a normalised kernel ``k(z)`` and ``b_s = g (s * k(z)) + o + n``. The kernel
is drawn from a physical family (``kernel_shape="physical"``, :class:`~napari_ssl_restore.
nets.gan.BlurShapes`): a Gaussian (the PSF) convolved with a disc (defocus) swept along a line
(motion), four numbers decoded from the code, starting as a Gaussian of std 1.5 px;
``kernel_shape="taps"`` decodes free taps instead (:class:`~napari_ssl_restore.nets.gan.
BlurKernels`). The family was chosen by measurement (docs/benchmarks/unpaired.md: +0.6 to +0.9 dB
over Richardson-Lucy on 12 held-out fields, where the free taps were level with it): the critic
moves four numbers where it moved 225 taps into irregular shapes. On that benchmark every field's
code still decodes to one kernel, a Gaussian of std 1.6-1.7 px with no disc or line: the code does
not yet carry each field's blur. ``g, o`` are a learned gain and offset (blurring lowers peaks) and
``n`` noise drawn from the input's estimated noise model. The cross-cycle keeps its two halves —
``G_S(b_s) ≈ s``, which is now a set of synthetic pairs under the input's own kind of blur and
noise, and ``g (G_S(b) * k(z')) + o ≈ b`` with ``z' ~ E_z(b_s)`` — and the critic of ``b_s`` against
the input's crops trains the kernels (what makes them the input's blurs); the perceptual term
compares ``G_S(b_s)`` with ``s``. The kernels learn at :data:`KERNEL_RATE` times the networks' rate
(free taps are logits of order 10) and are turned and mirrored at random for the synthetic pairs
(``kernel_turns``; a blur's direction varies from field to field; the blurred side then re-blurs
with ``z``, ``b``'s own code); every learning rate decays linearly over the second half of training
(``lr_decay``, CycleGAN's schedule). A known PSF replaces the learned kernels. ``reblur="network"``
keeps the paper's decoder and shared content block. The encoders have no downsampling by default
(``downs=0``; paper: 2): with the global skip, a downsampling network adds only a coarse correction
and cannot restore pixel-scale detail.

Restoring applies ``E_B`` and ``G_S`` (the exponential moving average of their weights) to every
plane through the engine's batched, tiled predictor. The second output, ``difference`` = output −
input, shows what deblurring added.

Deviations, documented: the physical re-blurring decoder and ``downs=0`` by default (above); the
perceptual features are the shipped denoiser's
(:func:`napari_ssl_restore.engine.gan_losses.perceptual_features`) instead of ImageNet VGG19's,
which cannot be downloaded here; no normalisation layers (instance norm makes tiles disagree); both
decoders output a correction added to their input image (a global skip, so untrained networks are
the identity); generators and discriminators step alternately every step (the authors step the
generators every second step); smaller defaults (32 features, 3 residual blocks per side, 64²
crops, 2000 steps) so it trains on a laptop CPU. Only ``E_B`` and ``G_S`` are saved (``save_model=``).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.registry import ExtraInput, MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ..engine.unpaired import (
    TRAIN,
    Training,
    UnpairedParams,
    UnpairedRun,
    clean_examples,
    run_unpaired,
    trains_on_the_stack,
)
from ._public import public_function

PHYSICS = {**TRAIN, "reblur": ("physics",)}
"""When the physical re-blurring's settings apply."""
KERNEL_RATE = 50.0
"""The blur kernels' learning rate, times the networks'."""


@dataclasses.dataclass(frozen=True)
class Params(UnpairedParams):
    """Disentangled deblurring settings (Lu et al. 2019)."""

    method_title = "Disentangled deblurring"

    mode: Literal["train", "apply"] = param(
        "train", "'train' on this image and the sharp examples, then deblur; 'apply' a saved "
                 "model (no sharp examples needed).", choices=("train", "apply"))
    patch_size: int = param(64, "Side of the training crops (paper: 128).", min=16, max=1024,
                            when=TRAIN, advanced=True)
    cycle_weight: float = param(10.0, "Weight of the cross-cycle L1 terms (paper: 10).", min=0.0,
                                max=1e3, step=1.0, when=TRAIN)
    kl_weight: float = param(0.01, "Weight of the blur code's KL divergence (paper: 0.01).",
                             min=0.0, max=10.0, step=0.01, when=TRAIN, advanced=True)
    perceptual_weight: float = param(0.1, "Weight of the perceptual term between the deblurred "
                                          "output and the input (paper: 0.1; 0: off).", min=0.0,
                                     max=100.0, step=0.01, when=TRAIN)
    psf_sigma: float = param(0.0, "A known Gaussian PSF's std (pixels) for the physics term; 0: "
                                  "the blur is unknown (unless psf= is given).", min=0.0,
                             max=20.0, step=0.1, when=TRAIN)
    physics_weight: float = param(10.0, "network: weight of L1(blur(deblurred), input) when the "
                                        "PSF is known (physics: the PSF replaces the learned "
                                        "kernels).", min=0.0, max=1e4, step=1.0,
                                  when={**TRAIN, "reblur": ("network",)}, advanced=True)
    reblur: Literal["physics", "network"] = param(
        "physics", "How sharp content is re-blurred: 'physics', convolved with a kernel decoded "
                   "from the blur code (learned, starting as a Gaussian) and given the input's "
                   "noise, so the cross-cycle's sharp side is synthetic pairs; 'network', the "
                   "paper's re-blurring decoder.", choices=("physics", "network"), when=TRAIN)
    kernel_size: int = param(15, "physics: side of the learned blur kernels (pixels; larger "
                                 "than the blur).", min=3, max=63, when=PHYSICS, advanced=True)
    adversarial_weight: float = param(
        1.0, "physics: weight of the deblurred output's adversarial term (paper: 1).", min=0.0,
        max=100.0, step=0.1, when=PHYSICS, advanced=True)
    kernel_shape: Literal["physical", "taps"] = param(
        "physical", "physics: what the blur code decodes into: 'physical', a Gaussian convolved "
                    "with a disc swept along a line (PSF, defocus, motion: four numbers per "
                    "code); 'taps', a free kernel (a softmax over its taps).",
        choices=("physical", "taps"), when=PHYSICS, advanced=True)
    kernel_turns: bool = param(True, "physics: the synthetic pairs' kernels are turned and "
                                     "mirrored at random (a blur's direction varies from field "
                                     "to field), so the deblurrer learns every orientation.",
                               when=PHYSICS, advanced=True)
    lr_decay: float = param(0.5, "physics: the fraction of the steps at the end over which every "
                                 "learning rate decays linearly to 0 (CycleGAN: half; 0: constant).",
                            min=0.0, max=1.0, step=0.1, when=PHYSICS, advanced=True)
    downs: int = param(0, "Stride-2 downsamplings in the encoders (paper: 2). 0 keeps every layer "
                          "at full resolution, so the correction reaches single pixels.", min=0,
                       max=4, when=TRAIN, advanced=True)
    code_size: int = param(8, "Dimensions of the blur code (paper: 8).", min=1, max=64,
                           when=TRAIN, advanced=True)
    features: int = param(32, "Channels of the encoders' first layer (×4 in the content map).",
                          min=4, max=256, when=TRAIN, advanced=True)
    blocks: int = param(3, "Residual blocks in each encoder and each decoder.", min=1, max=16,
                        when=TRAIN, advanced=True)
    disc_scales: int = param(2, "Discriminators per domain at 1, 1/2, ... of the resolution "
                                "(paper: multi-scale).", min=1, max=3, when=TRAIN, advanced=True)


def known_kernel(params: Params, psf, device):
    """The known PSF as a kernel tensor on ``device`` (``psf=`` or ``psf_sigma``), or ``None``
    when the blur is unknown."""
    from ..physics.operators import psf_kernel

    if psf is None and not params.psf_sigma:
        return None
    return psf_kernel(psf, params.psf_sigma, device)


def known_blur(params: Params, psf, device):
    """The known PSF's blur operator on ``(N, C, H, W)`` tensors, or ``None`` when it is
    unknown."""
    from ..physics.operators import blur

    kernel = known_kernel(params, psf, device)
    return None if kernel is None else (lambda x: blur(x, kernel))


class DisentangledDeblur(UnpairedRun):
    """Disentangled deblurring's own parts: the deblurrer (``E_B`` and ``G_S``), the re-blurrer,
    the blur encoder and the two critics, the cross-cycle, KL, perceptual and physics terms, and
    the deblurred planes."""

    name = "disentangled-deblur"
    architecture = "content-deblurrer"
    verb = "deblurring"
    multiple = 4

    def __init__(self, planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None,
                 psf=None):
        super().__init__(planes, params, ctx, out, clean)
        self.psf = psf
        self.multiple = 2 ** params.downs

    def generator(self):
        from ..nets.gan import ContentDeblurrer

        return ContentDeblurrer(self.planes.c, self.params.features, self.params.blocks,
                                downs=self.params.downs)

    def check_saved(self, ckpt: dict) -> None:
        if ckpt["architecture"] != "content-deblurrer":
            raise ValueError(f"model {self.params.model!r} is a {ckpt['architecture']!r}, not a "
                             "deblurrer saved by disentangled-deblur.")

    def training(self, deblurrer, average, blurred, sharp, rng, terms, preview_crop) -> Training:
        """The disentangled networks around the deblurrer (``average``: its moving average)."""
        if self.params.reblur == "physics":
            return self._physical(deblurrer, average, blurred, sharp, rng, terms, preview_crop)
        import torch

        from ..engine.gan_losses import generator_loss, perceptual_features, perceptual_loss
        from ..engine.gan_parts import Keeper, two_domains
        from ..engine.predict import Predictor
        from ..engine.train import seeded_init
        from ..nets.gan import BlurEncoder, Reblurrer

        params, device = self.params, self.device
        operator = known_blur(params, self.psf, device)
        c = blurred.fields[0].shape[1]
        with seeded_init(self.ctx.seed + 1):
            reblurrer = Reblurrer(deblurrer, params.code_size).to(device)
            blur_code = BlurEncoder(c, max(8, params.features // 2), params.code_size).to(device)
            d_sharp, d_blurred = (self.discriminator(params.patch_size, params.disc_scales)
                                  for _ in range(2))
        noise = torch.Generator(device=device).manual_seed(self.ctx.seed)
        critic_s, critic_b = self.critic(d_sharp, rng), self.critic(d_blurred, rng)
        features = perceptual_features(device) if params.perceptual_weight else None
        # one container so that the shared content block is optimised once
        nets = torch.nn.ModuleList([deblurrer, reblurrer, blur_code])
        opt = torch.optim.Adam(nets.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
        (val,) = blurred(max(4, params.batch_size))
        score = None if operator is None else (
            lambda model: (operator(model(val)) - val).abs().mean())
        keeper = Keeper(average, score=score)
        state: dict = {}

        def sample_code(x):
            mu, logvar = blur_code(x)
            eps = torch.randn(mu.shape, generator=noise, device=mu.device)
            return mu + eps * torch.exp(0.5 * logvar), mu, logvar

        def step(it: int):
            (b,) = blurred(params.batch_size)
            (s,) = sharp(params.batch_size)
            z, mu, logvar = sample_code(b)
            s_b = deblurrer(b)
            b_s = reblurrer(s, z)
            z2, _, _ = sample_code(b_s)
            b_hat = reblurrer(s_b, z2)
            s_hat = deblurrer(b_s)
            state.update(clean=s, restored=s_b, degraded=b, made=b_s)
            kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).mean()
            loss = terms("G_sharp", generator_loss(critic_s.judge(s_b))) \
                + terms("G_blurred", generator_loss(critic_b.judge(b_s))) \
                + terms("cycle", (b_hat - b).abs().mean() + (s_hat - s).abs().mean(),
                        params.cycle_weight) \
                + terms("KL", kl, params.kl_weight)
            if features is not None:
                loss = loss + terms("perceptual", perceptual_loss(features, s_b, b),
                                    params.perceptual_weight)
            if operator is not None and params.physics_weight:
                loss = loss + terms("physics", (operator(s_b) - b).abs().mean(),
                                    params.physics_weight)
            return loss

        critics, critics_step = two_domains(("sharp", critic_s), ("blurred", critic_b), state)

        preview_net = Predictor(average, device, multiple=4)
        (sharp_crop,) = sharp(1)
        code = torch.zeros(1, params.code_size, device=device)  # the mean blur of the prior

        def preview(it: int):
            reblurrer.eval()
            try:
                with torch.inference_mode():
                    reblurred = reblurrer(sharp_crop, code)[0].permute(1, 2, 0).cpu().numpy()
            finally:
                reblurrer.train()
            return {"deblurred": preview_net(preview_crop[None])[0], "re-blurred sharp": reblurred}

        def results(kept) -> dict:
            return {} if operator is None else {"physics_residual": keeper.best}

        return Training(step, critics_step, opt, critics, keeper,
                        preview, nets=(nets,), results=results)

    def _physical(self, deblurrer, average, blurred, sharp, rng, terms, preview_crop) -> Training:
        """The re-blurring decoder is a convolution: ``b_s = g (s * k(z)) + o + n`` with ``k(z)``
        the kernel of the blurred crop's blur code (:class:`~napari_ssl_restore.nets.gan.BlurKernels`;
        the known PSF when there is one), ``g, o`` a learned gain and offset and ``n`` noise
        drawn from the input's estimated noise model. The cross-cycle: ``G_S(b_s) ≈ s`` (synthetic
        pairs) and ``g (G_S(b) * k(z')) + o ≈ b`` with ``z'`` the code of ``b_s``; the critic of
        ``b_s`` against the input's crops trains the kernels."""
        import torch

        from ..engine.gan_losses import generator_loss, perceptual_features, perceptual_loss
        from ..engine.gan_parts import Keeper, two_domains
        from ..engine.known_operator import input_noise
        from ..engine.predict import Predictor
        from ..engine.train import linear_decay, seeded_init, spread
        from ..nets.gan import BlurEncoder, BlurKernels, BlurShapes
        from ..physics.operators import blur_each

        params, device = self.params, self.device
        c = blurred.fields[0].shape[1]
        known = known_kernel(params, self.psf, device)
        with seeded_init(self.ctx.seed + 1):
            decoder = BlurShapes if params.kernel_shape == "physical" else BlurKernels
            kernels = decoder(params.code_size, params.kernel_size, channels=c).to(device)
            blur_code = BlurEncoder(c, max(8, params.features // 2), params.code_size).to(device)
            d_sharp, d_blurred = (self.discriminator(params.patch_size, params.disc_scales)
                                  for _ in range(2))
        draws = torch.Generator(device=device).manual_seed(self.ctx.seed)
        cpu_draws = torch.Generator().manual_seed(self.ctx.seed)  # the kernels' turns
        noise = input_noise(blurred.fields[0])
        critic_s, critic_b = self.critic(d_sharp, rng), self.critic(d_blurred, rng)
        features = perceptual_features(device) if params.perceptual_weight else None
        nets = torch.nn.ModuleList([deblurrer, kernels, blur_code])
        # the kernels' taps are logits of order 10: at the networks' rate they would not move
        opt = torch.optim.Adam([
            {"params": [*deblurrer.parameters(), *blur_code.parameters()]},
            {"params": kernels.parameters(), "lr": params.learning_rate * KERNEL_RATE}],
            lr=params.learning_rate, betas=(0.5, 0.999))
        lam, adversarial = params.cycle_weight, params.adversarial_weight
        state: dict = {}

        def code_of(x):
            mu, logvar = blur_code(x)
            eps = torch.randn(mu.shape, generator=draws, device=mu.device)
            return mu + eps * torch.exp(0.5 * logvar), mu, logvar

        def reblur(x, code, turn: bool = False):
            k = kernels(code) if known is None else known.expand(len(x), *known.shape)
            if turn:  # one of the 8 turns and mirrors of the square, drawn per step
                r = int(torch.randint(8, (), generator=cpu_draws))
                k = k.rot90(r % 4, (-2, -1))
                k = k.transpose(-2, -1) if r >= 4 else k
            return kernels.units(blur_each(x, k))

        def step(it: int):
            (b,) = blurred(params.batch_size)
            (s,) = sharp(params.batch_size)
            z, mu, logvar = code_of(b)
            turn = params.kernel_turns and known is None
            b_s = reblur(s, z, turn)
            b_s = b_s + noise.sample(b_s.detach(), draws)  # as noisy as the input
            s_b, s_hat = deblurrer(b), deblurrer(b_s)
            # the paper re-blurs with the code of b_s, which has b's blur unless it was turned
            b_hat = reblur(s_b, z if turn else code_of(b_s)[0])
            state.update(clean=s, restored=s_b, degraded=b, made=b_s)
            kl = -0.5 * (1 + logvar - mu ** 2 - logvar.exp()).mean()
            loss = terms("G_blurred", generator_loss(critic_b.judge(b_s))) \
                + terms("cycle", (b_hat - b).abs().mean() + (s_hat - s).abs().mean(), lam) \
                + terms("KL", kl, params.kl_weight)
            if adversarial:
                loss = loss + terms("G_sharp", generator_loss(critic_s.judge(s_b)), adversarial)
            if features is not None:  # the synthetic side's: the input's features are blurred
                loss = loss + terms("perceptual", perceptual_loss(features, s_hat, s),
                                    params.perceptual_weight)
            return loss

        critics, critics_step = two_domains(("sharp", critic_s), ("blurred", critic_b), state,
                                            adversarial=bool(adversarial))

        (val,) = blurred(4)
        f, side = blurred.fields[0], params.patch_size  # the report's crops: the centres of
        y0, x0 = (f.shape[2] - side) // 2, (f.shape[3] - side) // 2  # 16 training planes at most
        centres = f[spread(len(f), 16), :, y0:y0 + side, x0:x0 + side]
        preview_net = Predictor(average, device, multiple=self.multiple)
        (sharp_crop,) = sharp(1)

        def preview(it: int):
            with torch.inference_mode():
                _, mu, _ = code_of(val[:1])
                reblurred = reblur(sharp_crop, mu)[0].permute(1, 2, 0).cpu().numpy()
            return {"deblurred": preview_net(preview_crop[None])[0], "re-blurred sharp": reblurred}

        def width() -> dict:  # the blur the kernels estimate, on fixed crops of the input
            with torch.no_grad():
                return {"kernel_std": round(kernels.width(blur_code(val)[0]), 3)}

        def results(kept) -> dict:
            if known is not None:
                return {"physics_residual": keeper.best, "noise": noise.describe()}
            out = {**width(), "noise": noise.describe()}
            if isinstance(kernels, BlurShapes):  # the decoded blur of each plane's centre
                with torch.no_grad():
                    shapes = kernels.shapes(blur_code(centres)[0])
                out["blur_shapes"] = {k: [round(float(v), 2) for v in t]
                                      for k, t in shapes.items()}
            return out

        # a known PSF: the checkpoint whose estimate best explains the input through it
        keeper = Keeper(average, score=None if known is None else (
            lambda model: (reblur(model(val), None) - val).abs().mean()))
        return Training(step, critics_step, opt, critics, keeper, preview, nets=(nets,),
                        results=results,
                        extra=None if known is not None else width,
                        lr_factor=linear_decay(params.steps, params.lr_decay)
                        if params.lr_decay else None)

    def write(self, i: int, plane: np.ndarray) -> None:
        self.out["image"][i] = plane
        self.out["difference"][i] = (plane - self.planes[i]).mean(-1) * self.ctx.scale  # input units


def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None, psf=None):
    """Train the disentangled networks (or load the deblurrer), then deblur every plane."""
    return (yield from run_unpaired(DisentangledDeblur(planes, params, ctx, out, clean, psf)))


def _standing(settings) -> str:
    """Measured against Richardson-Lucy with a guessed Gaussian PSF (issue 32,
    docs/benchmarks/unpaired.md)."""
    if settings.get("reblur", "physics") == "network":
        return ("Measured with the paper's re-blurring network: 3.3-4.0 dB under Richardson-Lucy "
                "with a guessed Gaussian PSF. The default reblur='physics' scored level with it; "
                "or use richardson-lucy.")
    if settings.get("kernel_shape", "physical") == "taps":
        return ("Measured with free kernel taps: level with Richardson-Lucy with a guessed "
                "Gaussian PSF (+0.01 to +0.23 dB); the default kernel_shape='physical' scored "
                "+0.6 to +0.9 dB.")
    return ("Measured on 12 held-out fields: +0.6 to +0.9 dB over Richardson-Lucy with a guessed "
            "Gaussian PSF on average (higher SSIM), +1.4 to +1.9 dB on defocus and Gaussian "
            "blurs, 0.2-0.7 dB under it on motion blurs: for those use richardson-lucy. Where "
            "noise dominates the blur, dncnn scored higher.")


SPEC = MethodSpec(
    name="disentangled-deblur",
    title="Disentangled deblurring (Lu et al. 2019): deblurring learned from unpaired blurred "
          "and sharp images",
    task="deblur",
    params=Params,
    run=run,
    function="deblur_disentangled",
    outputs=(Output("image", "The deblurred image."),
             Output("difference", "Output minus input in the input's intensity units, mean over "
                                  "channels: what deblurring added.", kind="map")),
    inputs=(
        clean_examples("Sharp examples of similar samples (sharp frames, confocal or "
                       "deconvolved images)"),
        ExtraInput("psf", "A known point-spread function (2-D) for the optional physics term.",
                   when=(("mode", ("train",)),)),
    ),
    scaling="percentile",
    uses_torch=True,
    linked_planes=trains_on_the_stack,
    standing=_standing,
)

deblur_disentangled = public_function(
    SPEC,
    summary="Deblur with networks learned from unpaired blurred and sharp images "
            "(disentangled representations).",
    notes="""
    Splits blurred images into content and an 8-d blur code, learns to re-blur sharp content and to
    deblur blurred content with cross-cycle consistency, adversarial, KL and perceptual terms, from
    the input's crops and *unpaired* sharp examples (``clean=``); a known PSF adds a physics term.
    ``full_output=True`` also returns the difference map and the trained ``model`` checkpoint.
    """,
    references="""
    .. [1] B. Lu, J.-C. Chen, R. Chellappa. Unsupervised domain-specific deblurring via
       disentangled representations. CVPR 2019.
    """,
)
