"""Cycle-Dehaze (Engin, Genç, Ekenel; CVPR Workshops 2018): dehazing learned from *unpaired* hazy
and clear images, by cycle-consistent adversarial translation.

Two generators translate between the domains — ``G``: hazy → clear (what restores) and ``F``:
clear → hazy — and two PatchGAN discriminators judge them: ``D_X`` tells ``G(y)`` from the clear
examples (``clean=``: confocal, light-sheet or deconvolved images of similar samples, any size, not
registered), ``D_Y`` tells ``F(x)`` from crops of the hazy input. Losses (LSGAN, real label 0.9):

- adversarial terms for ``G`` and ``F``;
- cycle consistency ``|F(G(y)) - y| + |G(F(x)) - x|``, weight ``cycle_weight`` (λ = 10);
- the *cyclic perceptual* loss: the same two cycles compared in a feature space, weight
  ``perceptual_weight``;
- optionally CycleGAN's identity loss ``|G(x) - x| + |F(y) - y|`` (``identity_weight`` × λ), which
  keeps intensities from inverting on small data.

The clear → hazy translation ``F`` is by default (``translation="physics"``) not a free network
but the atmospheric model the paper's haze obeys, ``F(x) = x t + A (1 - t)``
(:class:`~napari_ssl_restore.nets.gan.HazeTranslation`), under the transmission ``t`` that the Dark
Channel Prior (He et al. 2009) estimates on each crop of the hazy input and its airlight ``A``, with
two learned global corrections (an exponent of ``t`` and a shift of ``A``) that ``D_Y`` trains.
The clear examples hazed by ``F`` get noise drawn from the input's own estimated noise model, so
the clear cycle ``G(F(x)) ≈ x`` is a set of synthetic pairs that teaches ``G`` to remove this
input's kind of haze *and* its noise; the hazy cycle ``F(G(y)) ≈ y`` ties ``G(y)`` to the data
through the physics, compared as means over ``cycle_pool``² blocks (pixel for pixel it asks ``G``
to keep the input's noise), and the perceptual term is the clear cycle's only (the hazy input's
features are its noise's). With ``pre_dcp`` (the paper's optional DCP pre-processing, on by
default here) ``G`` sees DCP's recovery ``(y - A) / max(t, 0.1) + A`` of each plane, so an
untrained ``G`` returns a DCP answer and training learns what DCP leaves: mostly the noise DCP
amplifies where the haze is thick. The checkpoint kept is the one with the lowest error on fixed
synthetic pairs (a yardstick that needs no truth of the input). The DCP step is the ``dcp``
method's: the haze is estimated where zero is the input's physical zero (the network's percentile
units put the haze's own floor at 0, which hid part of the haze from the dark channel: measured,
that cost 1 dB on photographs) and the airlight pooled over four planes. On hazy colour
photographs this default is 0.03 dB under the ``dcp`` method (docs/benchmarks/unpaired.md: it
returns DCP's answer; the learned part does not add to it where there is no noise to remove).
``translation="network"`` is the paper's free ``F``, which learns any clear → hazy look; with four
clear examples it lost to DCP on our widefield benchmark (issue 32; docs/benchmarks/unpaired.md
measures both).

Restoring: ``G`` runs on every whole plane (``inference="full"``, the default: it trained on crops at
the input's own scale; tiled where a plane does not fit, exactly, as the generator has no
normalisation layers), or as in the paper (``inference="pyramid"``): each plane is reduced by a
Gaussian pyramid until it fits ``work_size``, ``G`` dehazes that coarse image and the **Laplacian
pyramid** of the full-resolution input puts its fine detail back on top — the paper trains on
images resized to 256², so its generator knows only that scale; ours trains on crops, and on our
benchmark (docs/benchmarks) whole planes scored 0.7 dB higher. The second output, ``difference`` =
input − output, shows what was removed as haze.

Deviations, documented: the authors' perceptual features are ImageNet VGG16's (pool2, pool5), which
cannot be downloaded here; this uses the activations of three layers of the project's shipped blind
denoiser (:func:`napari_ssl_restore.engine.gan_losses.perceptual_features`; our benchmark
(docs/benchmarks) measures it against no perceptual term). Smaller defaults than the paper's (32
features, 6 residual blocks, 64² crops, batch 2, 2000 steps instead of 256², batch 1, ~200k) so it
trains on a laptop CPU;
no normalisation layers in the generators (instance norm makes tiles disagree); no downsampling
in them by default (``downs=0``; CycleGAN's 2 leave the global skip only a coarse correction:
measured, such a generator did not learn to remove pixel noise at all in 300 supervised steps,
where the full-resolution one removed 70 % of it); generators start as the identity (global
skip); the inference generator is the exponential moving average of ``G``'s weights. Only ``G``
is saved (``save_model=``): a saved model restores (``mode="apply"``; with ``pre_dcp`` it gets DCP's
recovery of the new input under that input's own haze estimate) and can start a new training,
whose ``F`` and discriminators start afresh. A ``pre_dcp`` model does not export to bioimage.io
(other software would not run the DCP step).
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.registry import MethodSpec, Output, RunContext
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

PHYSICS = {**TRAIN, "translation": ("physics",)}
"""``when=`` of the settings of the physical translation (training only)."""


@dataclasses.dataclass(frozen=True)
class Params(UnpairedParams):
    """Cycle-Dehaze settings (Engin et al. 2018; CycleGAN defaults where they apply)."""

    method_title = "Cycle-Dehaze"

    mode: Literal["train", "apply"] = param(
        "train", "'train' on this image and the clear examples, then dehaze; 'apply' a saved "
                 "model (no clear examples needed).", choices=("train", "apply"))
    patch_size: int = param(64, "Side of the training crops (paper: 256).", min=16, max=1024,
                            when=TRAIN, advanced=True)
    learning_rate: float = param(1e-4, "Adam learning rate of every network (β1 = 0.5; paper: "
                                       "1e-4).", min=1e-7, max=1.0, step=1e-4, when=TRAIN,
                                 advanced=True)
    translation: Literal["physics", "network"] = param(
        "physics", "The clear → hazy translation F: 'physics', the atmospheric model x t + A (1 - t) "
                   "under the Dark Channel Prior's transmission of the input and its airlight, "
                   "with a learned correction (exponent of t, airlight shift); 'network', a free "
                   "generator as in the paper.", choices=("physics", "network"), when=TRAIN)
    haze_patch: int = param(15, "physics: the Dark Channel Prior's patch side for the input's "
                                "transmission (He et al.: 15).", min=1, max=301,
                            when=PHYSICS, advanced=True)
    haze_radius: int = param(60, "physics: radius of the guided filter that refines the "
                                 "transmission (He et al.: 60).", min=1, max=1000,
                             when=PHYSICS, advanced=True)
    adversarial_weight: float = param(
        0.0, "physics: weight of G's adversarial term (paper: 1). 0 (measured best, "
             "docs/benchmarks): the clear cycle — synthetic pairs under the input's own haze "
             "and noise — teaches G alone.", min=0.0,
        max=100.0, step=0.1, when=PHYSICS, advanced=True)
    cycle_pool: int = param(4, "physics: the hazy cycle F(G(y)) ≈ y compares means over blocks "
                               "of this side (1: pixels), where the input's noise is weaker and "
                               "the haze whole; pixel for pixel it asks G to keep the noise.",
                            min=1, max=64, when=PHYSICS, advanced=True)
    pre_dcp: bool = param(True, "physics: the generator dehazes the Dark Channel Prior's recovery "
                                "of the input (the paper's optional DCP pre-processing), so an "
                                "untrained one returns DCP's answer; off: it sees the input.",
                          when=PHYSICS, advanced=True)
    inference: Literal["full", "pyramid"] = param(
        "full", "'full': the generator on the whole plane, at the scale it trained at (tiled); "
                "'pyramid': dehaze at work_size and put back the input's fine detail with its "
                "Laplacian pyramid (the paper's step, for generators trained on reduced images).",
        choices=("full", "pyramid"))
    work_size: int = param(256, "pyramid: largest side the generator sees; larger planes are "
                                "reduced by factors of 2 to fit.", min=16, max=8192,
                           when=(("inference", ("pyramid",)),))
    cycle_weight: float = param(10.0, "Weight λ of the cycle-consistency L1 (paper: 10).",
                                min=0.0, max=1e3, step=1.0, when=TRAIN)
    perceptual_weight: float = param(1.0, "Weight of the cyclic perceptual loss (features of the "
                                          "shipped denoiser; 0: none).", min=0.0, max=1e3,
                                     step=0.1, when=TRAIN)
    identity_weight: float = param(0.0, "Identity loss weight, times λ (CycleGAN: 0.5; 0: off).",
                                   min=0.0, max=10.0, step=0.1, when=TRAIN, advanced=True)
    features: int = param(32, "Generator channels of the first layer (paper: 64).", min=4,
                          max=256, when=TRAIN, advanced=True)
    blocks: int = param(6, "Generator residual blocks (paper: 9 at 256², 6 at ≤128²).", min=1,
                        max=16, when=TRAIN, advanced=True)
    downs: int = param(0, "Stride-2 downsamplings in the generators (paper: 2). 0 keeps every "
                          "layer at full resolution: the generator's correction then reaches "
                          "single pixels (it can remove noise); with 2 it is a coarse one.",
                       min=0, max=4, when=TRAIN, advanced=True)


# --- the Laplacian pyramid -------------------------------------------------------------------------

def pyramid_levels(hw: tuple[int, int], work_size: int) -> int:
    """Halvings that bring the larger side of ``hw`` to at most ``work_size``."""
    levels, side = 0, max(hw)
    while side > work_size:
        side = (side + 1) // 2
        levels += 1
    return levels


def _reduce(x):
    """One Gaussian-pyramid step of ``(N, C, H, W)``: anti-aliased halving (ceil sizes)."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    return F.interpolate(x, size=((h + 1) // 2, (w + 1) // 2), mode="bilinear", antialias=True,
                         align_corners=False)


def _expand(x, size):
    import torch.nn.functional as F

    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def coarse(x, levels: int):
    """The top of ``x``'s Gaussian pyramid, ``levels`` halvings down."""
    for _ in range(levels):
        x = _reduce(x)
    return x


def pyramid_upsample(low, full, levels: int):
    """Collapse ``full``'s Laplacian pyramid with its coarsest level replaced by ``low`` (the
    dehazed coarse image): ``low`` brought to full size with the input's own band-pass detail
    added at every level. With ``low = coarse(full, levels)`` this returns ``full`` exactly."""
    gauss = [full]
    for _ in range(levels):
        gauss.append(_reduce(gauss[-1]))
    out = low
    for k in range(levels - 1, -1, -1):
        size = gauss[k].shape[-2:]
        out = _expand(out, size) + (gauss[k] - _expand(gauss[k + 1], size))
    return out


# --- training and restoring -----------------------------------------------------------------------

class CycleDehaze(UnpairedRun):
    """Cycle-Dehaze's own parts: the generator ``G``, the translation ``F`` and the two critics, the
    cycle losses, and the dehazed planes (through the Laplacian pyramid when asked)."""

    name = "cycle-dehaze"
    verb = "dehazing"

    def __init__(self, planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None):
        super().__init__(planes, params, ctx, out, clean)
        self.levels = (pyramid_levels(planes.hw, params.work_size)
                       if params.inference == "pyramid" else 0)
        self._last: dict = {}
        self.haze = None
        self.pre = False
        """Whether the generator sees the Dark Channel Prior's recovery of each plane."""
        if params.mode == "train" and params.translation == "physics":
            self._estimate_haze(params.haze_patch, params.haze_radius, params.pre_dcp)

    def _estimate_haze(self, patch: int, radius: int, pre: bool) -> None:
        """The input's haze as the Dark Channel Prior estimates it (airlight from four planes
        spread over the stack, each plane's transmission when asked)."""
        from ..engine.known_operator import input_haze

        self.haze = input_haze(self.planes, self.device, patch, radius)
        self.pre = pre
        self.info["airlight"] = self.haze.airlight.round(4).tolist()

    def check_saved(self, ckpt: dict) -> None:
        """A generator trained on the Dark Channel Prior's recovery gets it here too, under this
        input's own haze estimate."""
        if self.params.mode != "apply":
            return
        saved = (ckpt.get("provenance") or {}).get("params") or {}
        if saved.get("translation") == "physics" and saved.get("pre_dcp"):
            self._estimate_haze(int(saved.get("haze_patch", 15)),
                                int(saved.get("haze_radius", 60)), True)

    def source(self, i: int) -> np.ndarray:
        """What the generator restores of plane ``i``: the plane, or DCP's recovery of it."""
        plane = self.planes[i]
        return self.haze.recover_plane(plane) if self.pre else plane

    def data(self, rng) -> tuple:
        """The unpaired samplers; with the physical translation the hazy crops come with their
        transmission (DCP's), and the clear examples are rescaled so that hazed under the input's
        median transmission they span what the input spans."""
        if self.haze is None:
            return super().data(rng)
        from ..engine.known_operator import in_input_units
        from ..engine.unpaired import unpaired_data

        haze = self.haze
        hazy, clear, crop = unpaired_data(
            self.planes, self.clean, patch=self.params.patch_size, device=self.device, rng=rng,
            title=self.title, rescale=lambda x, *maps: in_input_units(x, haze.apply, *maps),
            aligned=haze.transmission)
        return hazy, clear, haze.recover_plane(crop) if self.pre else crop

    def generator(self):
        from ..nets.gan import ResnetGenerator

        c = self.planes.c
        return ResnetGenerator(c, c, self.params.features, self.params.blocks,
                               downs=self.params.downs, norm="none")

    def training(self, g, average, hazy, clear, rng, terms, preview_crop) -> Training:
        """Both translations: ``G`` (and its moving average ``average``) and ``F``."""
        from ..engine.gan_losses import generator_loss, perceptual_loss
        from ..engine.gan_parts import Keeper, two_domains
        from ..engine.predict import Predictor
        from ..nets.gan import ResnetGenerator

        params, device = self.params, self.device
        if self.haze is not None:
            return self._physical(g, average, hazy, clear, rng, terms, preview_crop)
        c = hazy.fields[0].shape[1]
        f, critic_x, critic_y, features, opt = self._parts(
            g, lambda: ResnetGenerator(c, c, params.features, params.blocks, downs=params.downs,
                                       norm="none"), rng)
        state: dict = {}
        lam = params.cycle_weight
        (clear_crop,) = clear(1)

        def step(it: int):
            (y,) = hazy(params.batch_size)
            (x,) = clear(params.batch_size)
            gy, fx = g(y), f(x)
            rec_y, rec_x = f(gy), g(fx)
            state.update(clean=x, restored=gy, degraded=y, made=fx)
            loss = terms("G", generator_loss(critic_x.judge(gy))) \
                + terms("F", generator_loss(critic_y.judge(fx))) \
                + terms("cycle", (rec_y - y).abs().mean() + (rec_x - x).abs().mean(), lam)
            if features is not None:
                loss = loss + terms("perceptual", perceptual_loss(features, rec_y, y)
                                    + perceptual_loss(features, rec_x, x), params.perceptual_weight)
            if params.identity_weight:
                loss = loss + terms("identity", (g(x) - x).abs().mean() + (f(y) - y).abs().mean(),
                                    params.identity_weight * lam)
            return loss

        critics, critics_step = two_domains(("clear", critic_x), ("hazy", critic_y), state)

        forward = Predictor(average, device)
        backward = Predictor(f, device)
        clear_plane = clear_crop[0].permute(1, 2, 0).cpu().numpy()

        def preview(it: int):
            f.eval()
            try:
                return {"hazy to clear": forward(preview_crop[None])[0],
                        "clear to hazy": backward(clear_plane[None])[0]}
            finally:
                f.train()

        return Training(step, critics_step, opt, critics,
                        Keeper(average), preview, nets=(g, f))

    def _parts(self, g, translation, rng):
        """The translation ``F`` (``translation()``, built under the run's seed + 1 with the two
        discriminators), the critics of the clear and hazy domains, the perceptual features
        (or ``None``) and the optimiser of ``G`` and ``F``."""
        import itertools

        import torch

        from ..engine.gan_losses import perceptual_features
        from ..engine.train import seeded_init

        params = self.params
        with seeded_init(self.ctx.seed + 1):
            f = translation().to(self.device)
            d_clear = self.discriminator(params.patch_size)
            d_hazy = self.discriminator(params.patch_size)
        features = perceptual_features(self.device) if params.perceptual_weight else None
        opt = torch.optim.Adam(itertools.chain(g.parameters(), f.parameters()),
                               lr=params.learning_rate, betas=(0.5, 0.999))
        return f, self.critic(d_clear, rng), self.critic(d_hazy, rng), features, opt

    def _physical(self, g, average, hazy, clear, rng, terms, preview_crop) -> Training:
        """Both translations with ``F`` the atmospheric model under the input's own haze
        (:class:`~napari_ssl_restore.nets.gan.HazeTranslation`): the clear cycle
        ``G(F(x, t) + n) ≈ x`` (``n``: noise drawn from the input's estimated noise model) and the
        hazy cycle ``F(G(y), t_y) ≈ y``, the critic of ``G(y)`` against the clear examples and the
        critic of ``F(x, t) + n`` against the hazy crops (it trains ``F``'s correction)."""
        import torch

        from ..engine.gan_losses import generator_loss, perceptual_loss
        from ..engine.gan_parts import Keeper, two_domains
        from ..engine.known_operator import input_noise
        from ..engine.predict import Predictor
        from ..nets.gan import HazeTranslation

        params, device = self.params, self.device
        f, critic_x, critic_y, features, opt = self._parts(
            g, lambda: HazeTranslation(self.haze.airlight), rng)
        noise = input_noise(hazy.fields[0])
        draws = torch.Generator(device=device).manual_seed(self.ctx.seed)
        state: dict = {}
        lam, adversarial = params.cycle_weight, params.adversarial_weight
        (clear_crop,), (_, t_crop) = clear(1), hazy(1)
        haze = self.haze
        seen = haze.recover if self.pre else (lambda y, t: y)  # what G sees of a hazy crop
        pool = params.cycle_pool

        def band(img):  # the hazy cycle's scale: block means
            return torch.nn.functional.avg_pool2d(img, pool) if pool > 1 else img

        with torch.no_grad():  # fixed synthetic pairs under DCP's own haze model: the yardstick
            (val_x,), (_, val_t) = clear(4), hazy(4)
            val_y = haze.apply(val_x, val_t)
            val_y = seen(val_y + noise.sample(val_y, draws), val_t)

        def step(it: int):
            y, t = hazy(params.batch_size)
            (x,) = clear(params.batch_size)
            gy, fx = g(seen(y, t)), f(x, t)
            fx = fx + noise.sample(fx.detach(), draws)  # hazed and as noisy as the input
            rec_y, rec_x = f(gy, t), g(seen(fx, t))
            state.update(clean=x, restored=gy, degraded=y, made=fx)
            loss = terms("F", generator_loss(critic_y.judge(fx))) \
                + terms("cycle", (band(rec_y) - band(y)).abs().mean()
                        + (rec_x - x).abs().mean(), lam)
            if adversarial:
                loss = loss + terms("G", generator_loss(critic_x.judge(gy)), adversarial)
            if features is not None:  # the clear cycle's: the hazy input's features are noise's
                loss = loss + terms("perceptual", perceptual_loss(features, rec_x, x),
                                    params.perceptual_weight)
            if params.identity_weight:
                loss = loss + terms("identity", (g(x) - x).abs().mean(),
                                    params.identity_weight * lam)
            return loss

        critics, critics_step = two_domains(("clear", critic_x), ("hazy", critic_y), state,
                                            adversarial=bool(adversarial))

        forward = Predictor(average, device)

        def preview(it: int):
            with torch.inference_mode():
                hazed = f(clear_crop[:1], t_crop[:1])[0].permute(1, 2, 0).cpu().numpy()
            return {"hazy to clear": forward(preview_crop[None])[0], "clear to hazy": hazed}

        return Training(step, critics_step, opt, critics,
                        Keeper(average, score=lambda model: (model(val_y) - val_x).abs().mean()),
                        preview, nets=(g, f),
                        results=lambda kept: {"translation": f.describe(),
                                              "checkpoint_by": "synthetic pairs",
                                              "noise": noise.describe()})

    def predictor(self, net):
        self.info.update(pyramid_levels=self.levels)
        return super().predictor(net)

    def read(self, i: int) -> np.ndarray:
        """The plane the generator sees: the input, or the top of its Gaussian pyramid."""
        import torch

        from ..engine.train import to_device

        plane = self.source(i)
        if not self.levels:
            return plane
        self._last.update(index=i, full=to_device(plane[None], self.device))
        with torch.inference_mode():
            return coarse(self._last["full"], self.levels)[0].permute(1, 2, 0).cpu().numpy()

    def write(self, i: int, plane: np.ndarray) -> None:
        import torch

        from ..engine.train import to_device

        if self.levels:
            last = self._last
            with torch.inference_mode():
                full = last["full"] if last.get("index") == i else to_device(self.source(i)[None],
                                                                             self.device)
                low = to_device(plane[None], self.device)
                plane = pyramid_upsample(low, full, self.levels)[0].permute(1, 2, 0).cpu().numpy()
        self.out["image"][i] = plane
        removed = (self.planes[i] - plane).mean(-1)
        self.out["difference"][i] = removed * self.ctx.scale  # in the input's intensity units


def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None):
    """Train the two translations (or load G), then dehaze every plane, streamed."""
    return (yield from run_unpaired(CycleDehaze(planes, params, ctx, out, clean)))


def _standing(settings) -> str:
    """Measured against the Dark Channel Prior (issue 32, docs/benchmarks/unpaired.md)."""
    if settings.get("translation", "physics") == "network":
        return ("Measured with the paper's free translation: 1.06 dB under the Dark Channel Prior "
                "on hazy widefield fields. The default translation='physics' scored above it.")
    return ("Measured on held-out hazy widefield fields: above the Dark Channel Prior on every "
            "field (+1.2 dB with the same haze_patch as dcp's patch_size, +0.6 at both defaults). "
            "On hazy colour photographs it returns DCP's answer (0.03 dB under it at both "
            "defaults): for photographs use dcp, which takes a fraction of a second.")


SPEC = MethodSpec(
    name="cycle-dehaze",
    title="Cycle-Dehaze (Engin et al. 2018): dehazing learned from unpaired hazy and clear images",
    task="dehaze",
    params=Params,
    run=run,
    function="dehaze_cycle",
    outputs=(Output("image", "The dehazed image."),
             Output("difference", "Input minus output in the input's intensity units, mean over "
                                  "channels: what was removed as haze.", kind="map")),
    inputs=(
        clean_examples("Clear examples of similar samples (confocal, light-sheet, "
                       "deconvolved)"),
    ),
    scaling="percentile",
    uses_torch=True,
    linked_planes=trains_on_the_stack,
    standing=_standing,
)

dehaze_cycle = public_function(
    SPEC,
    summary="Dehaze with generators learned from unpaired hazy and clear images (Cycle-Dehaze).",
    notes="""
    Trains :math:`G: Y \\to X` (hazy to clear) and :math:`F: X \\to Y` with LSGAN discriminators,
    :math:`\\lambda(\\|F(G(y)) - y\\|_1 + \\|G(F(x)) - x\\|_1)` and a cyclic perceptual term, on the
    input's crops and the *unpaired* clear examples (``clean=``); restores at ``work_size`` and
    restores fine detail with the input's Laplacian pyramid. ``full_output=True`` also returns the
    difference map and the trained ``model`` checkpoint.
    """,
    references="""
    .. [1] D. Engin, A. Genç, H. K. Ekenel. Cycle-Dehaze: enhanced CycleGAN for single image
       dehazing. CVPR Workshops (NTIRE) 2018.
    .. [2] J.-Y. Zhu, T. Park, P. Isola, A. A. Efros. Unpaired image-to-image translation using
       cycle-consistent adversarial networks. ICCV 2017.
    """,
)
