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

Restoring applies ``E_B`` and ``G_S`` (the exponential moving average of their weights) to every
plane through the engine's batched, tiled predictor. The second output, ``difference`` = output −
input, shows what deblurring added.

Deviations, documented: the perceptual features are the shipped denoiser's
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
    physics_weight: float = param(10.0, "Weight of L1(blur(deblurred), input) when the PSF is "
                                        "known.", min=0.0, max=1e4, step=1.0, when=TRAIN,
                                  advanced=True)
    code_size: int = param(8, "Dimensions of the blur code (paper: 8).", min=1, max=64,
                           when=TRAIN, advanced=True)
    features: int = param(32, "Channels of the encoders' first layer (×4 in the content map).",
                          min=4, max=256, when=TRAIN, advanced=True)
    blocks: int = param(3, "Residual blocks in each encoder and each decoder.", min=1, max=16,
                        when=TRAIN, advanced=True)
    disc_scales: int = param(2, "Discriminators per domain at 1, 1/2, ... of the resolution "
                                "(paper: multi-scale).", min=1, max=3, when=TRAIN, advanced=True)


def known_blur(params: Params, psf, device):
    """The known PSF's blur operator on ``(N, C, H, W)`` tensors, or ``None`` when it is
    unknown."""
    from ..physics.operators import blur, psf_kernel

    if psf is None and not params.psf_sigma:
        return None
    kernel = psf_kernel(psf, params.psf_sigma, device)
    return lambda x: blur(x, kernel)


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

    def generator(self):
        from ..nets.gan import ContentDeblurrer

        return ContentDeblurrer(self.planes.c, self.params.features, self.params.blocks)

    def check_saved(self, ckpt: dict) -> None:
        if ckpt["architecture"] != "content-deblurrer":
            raise ValueError(f"model {self.params.model!r} is a {ckpt['architecture']!r}, not a "
                             "deblurrer saved by disentangled-deblur.")

    def training(self, deblurrer, average, blurred, sharp, rng, terms, preview_crop) -> Training:
        """The disentangled networks around the deblurrer (``average``: its moving average)."""
        import torch

        from ..engine.gan_losses import generator_loss, perceptual_features, perceptual_loss
        from ..engine.gan_parts import Keeper
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
            state.update(b=b, s=s, s_b=s_b, b_s=b_s)
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

        def critics_step(it: int) -> None:
            critic_s.update(state["s"], state["s_b"])
            critic_b.update(state["b"], state["b_s"])
            state.clear()

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

        return Training(step, critics_step, opt, {"sharp": critic_s, "blurred": critic_b}, keeper,
                        preview, nets=(nets,), results=results)

    def write(self, i: int, plane: np.ndarray) -> None:
        self.out["image"][i] = plane
        self.out["difference"][i] = (plane - self.planes[i]).mean(-1) * self.ctx.scale  # input units


def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None, psf=None):
    """Train the disentangled networks (or load the deblurrer), then deblur every plane."""
    return (yield from run_unpaired(DisentangledDeblur(planes, params, ctx, out, clean, psf)))


def _standing(settings) -> str:
    """Measured against Richardson-Lucy with a guessed Gaussian PSF (issue 32, docs/benchmarks)."""
    return ("Measured: 4.0 dB under Richardson-Lucy with a guessed Gaussian PSF on held-out "
            "fluorescence crops (defocus, motion and Gaussian blurs); it can double edges along "
            "motion it has not seen. Use richardson-lucy.")

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
