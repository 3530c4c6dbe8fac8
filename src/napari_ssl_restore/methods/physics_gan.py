"""Physics-based GAN (Pan, Dong, Ren, Lin, Tang, Yang; TPAMI 2020): restore through a known operator
with an adversarial prior learned from *unpaired* clean examples.

A generator ``G`` maps the degraded image ``y`` to an estimate ``x = G(y)`` under two pressures:

- **physics**: pushed back through the known degradation ``H`` the estimate must reproduce the
  input, ``L1(H(G(y)), y)`` weighted 10 as the authors do — ``H`` is a PSF blur (``deconv``: the
  given PSF or a Gaussian of ``psf_sigma``), an anti-aliased ×2/×4 downsampling (``sr``), the haze
  model ``x t + A (1 - t)`` with the Dark Channel Prior's transmission ``t`` and airlight ``A``
  (``dehaze``) or the identity (``denoise``); the blur and downsampling are Deep Image Prior's
  (:mod:`napari_ssl_restore.physics.operators`), the haze estimate DCP's
  (:mod:`napari_ssl_restore.physics.haze`). On training crops the term is scored inside the operator's
  reach from the border (a blurred crop's border depends on the padding, not on ``G(y)``);
- **adversarial**: a PatchGAN discriminator trained on the clean examples (``clean=``: confocal or
  deconvolved images of similar samples — any size, not registered to ``y``) must not tell ``G(y)``
  from them (LSGAN, one-sided label smoothing, a pool of past fakes). Optionally
  (``data_adversarial_weight``, the authors' second discriminator) another one must not tell
  ``H(G(y))`` from ``y``.

Either term alone fails in its own way: physics alone has many solutions (it amplifies noise), the
GAN alone invents plausible structure unrelated to ``y``. The second output, the **residual map**
``|H(G(y)) - y|``, shows where the estimate does not explain the data.

Training uses random crops of ``y`` and of the clean examples (flips and 90° rotations, on the
device), Adam 2e-4 with β1 = 0.5, the engine's one loop (the discriminators step after each
generator step); prediction streams every plane through the engine's batched predictor with the
exponential moving average of the generator's weights. Every ``check_every`` steps a checkpoint
is scored, and the best one is kept: when the user gives a paired QC image (``qc_input=``,
``qc_truth=``), by how well it restores it (error after the best gain and offset); else, with
synthetic pairs on (below), by their error on a fixed set of them; else by the physics residual on
fixed crops under the discrepancy principle (Morozov): nearest 1.05 times the input's estimated
noise (:data:`~napari_ssl_restore.engine.known_operator.DISCREPANCY`), since the lowest residual
is the estimate that fits the noise too.
When the kept estimate explains the input less well than the input itself (``|H(y) - y|``), the
provenance says so (``warning``). A NaN loss ends training with the best checkpoint, saying so.

Deviations: the generator is CycleGAN's ResNet generator with resize-convolution upsampling and a
global skip (starts as the identity / nearest upsampling), without normalisation so tiles of a
large plane agree exactly (instance norm, as in the authors' code, makes them disagree), and by
default without its two downsamplings (``downs=0``: every layer at full resolution, the same
arithmetic per pixel; measured on the deconvolution benchmark (docs/benchmarks), +2.3 dB over
``downs=2``);
smaller defaults (32 features, 6 blocks, 64² crops) so it trains on a laptop CPU. Added (not in
the paper, on by default): ``synthetic_weight`` — the clean examples degraded by the same ``H``
and by noise estimated from the input (:func:`napari_ssl_restore.physics.noise.noise_of_image`) give
synthetic pairs, ``L1(G(H(x) + n), x)`` weighted 10; the unpaired data and the known physics then
also supervise ``G`` directly (``synthetic_weight=0`` is the paper's loss; our benchmark
(docs/benchmarks) measures both, and that the adversarial term costs PSNR there:
``adversarial_weight=0`` scores best, the GAN's sharpness is paid for in distortion, as Blau &
Michaeli 2018 predict). The
authors' paired L1 term trains on registered pairs when the user gives them (``pairs_input=``,
``pairs_truth=``, ``paired_weight``; 'deconv' and 'denoise'), the truth mapped to the units in
which its degradation matches the acquisition; a QC pair only chooses the checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.registry import ExtraInput, MethodSpec, Output, RunContext
from ..engine.known_operator import (
    DISCREPANCY,
    in_input_units,
    input_haze,
    input_noise,
    interior,
    noise_floor,
    qc_error,
    qc_pair,
    residual_map,
    training_pairs,
)
from ..engine.planes import Outputs, Planes
from ..engine.unpaired import (
    TRAIN,
    Training,
    UnpairedParams,
    UnpairedRun,
    clean_examples,
    run_unpaired,
    trains_on_the_stack,
    unpaired_data,
)
from ..engine.volume import AxialSlices, axial_kernel, check_one_stack
from ..physics.operators import LANCZOS_A, blur, downsample, psf_kernel, psf_symmetries
from ._public import public_function

logger = logging.getLogger(__name__)

TASKS = ("deconv", "sr", "dehaze", "denoise")
TASK_ADVERSARIAL = {"deconv": 0.0, "sr": 1.0, "dehaze": 1.0, "denoise": 1.0}
"""The adversarial weight each task gets by default (``adversarial_weight=-1``), and the runs
that chose it:

- ``deconv`` 0: physics + synthetic pairs without the adversarial term scored higher on every
  field measured: +3.6 dB on the deconvolution benchmark (docs/benchmarks) (29.92 vs 26.32,
  ``benchmarks/bench_physics_gan.py``), +1.15 dB on held-out fluorescence crops (31.51 vs 30.36,
  Gaussian PSF σ 2.5, issue 32). The GAN's sharpness is paid for in distortion (Blau &
  Michaeli 2018).
- ``sr`` 1: ×4 super-resolution scored higher with it (docs/benchmarks: +1.3 dB over bicubic).
- ``dehaze`` 1: the paper's loss, once +0.24 dB over DCP on one field; on three fields every
  setting is under DCP (default −0.9 dB, without the adversarial term −0.7:
  docs/benchmarks/physics-gan.md, ``--dehaze --seeds 10,11,12``). Not changed: those fields would
  choose it and none is left to report on; the dock points to ``dcp`` and ``cycle-dehaze``.
- ``denoise`` 1: not measured; the paper's loss.
"""


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
    task: Literal["deconv", "sr", "dehaze", "denoise"] = param(
        "deconv", "The known degradation H: 'deconv' (PSF blur: psf= or a Gaussian of psf_sigma), "
                  "'sr' (anti-aliased downsampling by sr_factor), 'dehaze' (haze x t + A (1 - t), "
                  "t and A by the Dark Channel Prior), 'denoise' (identity).",
        choices=TASKS)
    psf_sigma: float = param(2.0, "deconv: std (pixels) of the Gaussian PSF when no psf= is given.",
                             min=0.3, max=20.0, step=0.1, when=(("task", ("deconv",)),))
    sr_factor: int = param(2, "sr: upsampling factor (2 or 4).", min=2, max=4,
                           when=(("task", ("sr",)),))
    axial_sigma: float = param(0.0, "clean='lateral': the PSF's axial std in pixels (Z sampled "
                                    "like X), above psf_sigma (its lateral std); unused when a 3-D "
                                    "psf= is given.", min=0.0, max=50.0, step=0.1,
                               when=(("task", ("deconv",)),), advanced=True)
    haze_patch: int = param(15, "dehaze: the Dark Channel Prior's patch side (He et al.: 15); the "
                                "guided filter that refines t has 4x its radius.", min=3, max=101,
                            when=(("task", ("dehaze",)),), advanced=True)
    physics_weight: float = param(10.0, "Weight of L1(H(G(y)), y) against the adversarial term "
                                        "(authors: 10).", min=0.0, max=1e4, step=1.0, when=TRAIN)
    adversarial_weight: float = param(-1.0, "Weight of the adversarial term; -1 = the task's "
                                            "measured default (deconv 0: physics and synthetic "
                                            "pairs only, which scored higher; sr, dehaze, "
                                            "denoise 1: the paper's); 0 = off.", min=-1.0,
                                      max=1e3, step=0.1, when=TRAIN, advanced=True)
    data_adversarial_weight: float = param(
        0.0, "Weight of a second discriminator that tells H(G(y)) from the input y (the "
             "authors' optional one; 0: off).", min=0.0, max=1e3, step=0.1, when=TRAIN,
        advanced=True)
    synthetic_weight: float = param(
        10.0, "Weight of L1(G(H(x) + n), x): the clean examples x degraded by H and by noise n "
              "estimated from the input, as pairs (not in the paper; 0: the paper's loss).",
        min=0.0, max=1e4, step=1.0, when=TRAIN)
    paired_weight: float = param(
        10.0, "Weight of L1(G(a), b) on registered training pairs (pairs_input a, pairs_truth b; "
              "the authors' paired term, used only when pairs are given).", min=0.0, max=1e4,
        step=1.0, when=TRAIN, advanced=True)
    features: int = param(32, "Generator channels of its first layer (CycleGAN: 64).", min=4,
                          max=256, when=TRAIN, advanced=True)
    blocks: int = param(6, "Generator residual blocks (CycleGAN: 9 at 256², 6 at ≤128²).", min=1,
                        max=16, when=TRAIN, advanced=True)
    downs: int = param(0, "Generator stride-2 downsamplings before its residual blocks (CycleGAN: "
                          "2). 0 keeps every layer at full resolution, which the fine detail of "
                          "deconvolution needs, at the same arithmetic per pixel.", min=0, max=3,
                       when=TRAIN, advanced=True)
    disc_scales: int = param(1, "Discriminators at 1, 1/2, 1/4... of the resolution.", min=1,
                             max=3, when=TRAIN, advanced=True)

    def __post_init__(self):
        if self.task == "sr" and self.sr_factor not in (2, 4):
            raise ValueError(f"Physics-GAN: sr_factor must be 2 or 4; got {self.sr_factor}.")
        super().__post_init__()

    @property
    def zoom(self) -> int:
        return self.sr_factor if self.task == "sr" else 1

    @property
    def adversarial(self) -> float:
        """The adversarial weight in use: ``adversarial_weight``, or the task's default
        (:data:`TASK_ADVERSARIAL`) when it is -1."""
        weight = self.adversarial_weight
        return TASK_ADVERSARIAL[self.task] if weight < 0 else weight


# --- the operator ----------------------------------------------------------------------------------

def make_operator(params: Params, psf, device, haze=None, axial=None):
    """``H(x, *maps)`` for the task, on ``(N, C, H, W)`` tensors (``maps``: the transmission crop
    for 'dehaze', nothing otherwise), and its reach ``(rows, columns)`` in input pixels: within
    that margin of a crop's border ``H(G(y))`` depends on the padding, not on ``G(y)`` (see
    :func:`interior`)."""
    if axial is not None:  # axial slices, Z vertical: the blur the lateral planes lack
        kernel = axial_kernel(psf, params.psf_sigma, params.axial_sigma, device)
    elif params.task == "deconv":
        kernel = psf_kernel(psf, params.psf_sigma, device)
    elif params.task == "sr":
        return (lambda x, *_: downsample(x, params.sr_factor)), (LANCZOS_A, LANCZOS_A)
    elif params.task == "dehaze":
        return haze.apply, (0, 0)
    else:
        return (lambda x, *_: x), (0, 0)
    return (lambda x, *_: blur(x, kernel)), (kernel.shape[0] // 2, kernel.shape[1] // 2)


def _augmentation(params: Params, psf, axial) -> bool | str:
    """The degraded crops' augmentation: every flip and rotation where the operator is invariant
    to them (Gaussian PSF, downsampling, haze, identity); for a measured PSF only the ones it is
    symmetric under; for axial slices left-right flips."""
    if axial is not None:
        return "flips"
    if params.task != "deconv" or psf is None:
        return True
    return psf_symmetries(psf)


def _axial_slices(planes: Planes, params: Params, ctx: RunContext) -> AxialSlices:
    """``clean='lateral'``: the stack's own lateral planes teach its axial slices (see
    :class:`~napari_ssl_restore.engine.volume.AxialSlices`); for the axial blur, task 'deconv'."""
    check_one_stack(ctx.axes)
    if params.task != "deconv":
        raise ValueError("clean='lateral' restores the axial blur: use task='deconv' (with "
                         f"axial_sigma or a 3-D psf=); got task={params.task!r}.")
    return AxialSlices(planes, ctx.axes, params.patch_size)


# --- training and restoring -----------------------------------------------------------------------

class PhysicsGAN(UnpairedRun):
    """Physics-GAN's own parts: the known operator, the generator and its critics, the physics,
    adversarial, synthetic and paired terms, the checkpoint's score, and the restored planes with
    their residual maps (with ``clean='lateral'``, the volume's axial slices)."""

    name = "physics-gan"

    def __init__(self, planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None,
                 psf=None, qc=(None, None), pairs=(None, None)):
        super().__init__(planes, params, ctx, out, clean)
        self.psf, self.qc_inputs, self.pairs_inputs = psf, qc, pairs
        self.zoom = self.info["zoom"] = params.zoom
        self.axial = _axial_slices(planes, params, ctx) if isinstance(clean, str) else None
        self.haze = (input_haze(planes, self.device, params.haze_patch)
                     if params.task == "dehaze" else None)
        self.operator, self.margin = make_operator(params, psf, self.device, self.haze,
                                                   self.axial)
        if self.axial is not None:
            self.sources = self.axial.slices

    def generator(self):
        from ..nets.gan import ResnetGenerator

        c, params = self.planes.c, self.params
        return ResnetGenerator(c, c, params.features, params.blocks, downs=params.downs,
                               scale=self.zoom, norm="none")

    def data(self, rng) -> tuple:
        """The unpaired samplers (the clean examples in the input's units, see
        :func:`in_input_units`), then the QC pair and the training pairs, when given."""
        params, axial, c = self.params, self.axial, self.planes.c
        augment = _augmentation(params, self.psf, axial)
        samplers = unpaired_data(
            axial.training if axial is not None else self.planes,
            axial.lateral_planes() if axial is not None else self.clean,
            patch=params.patch_size, zoom=self.zoom, device=self.device, rng=rng,
            title=self.title, rescale=lambda x, *maps: in_input_units(x, self.operator, *maps),
            aligned=self.haze.transmission if self.haze is not None else None, augment=augment)
        self.qc = qc_pair(*self.qc_inputs, c, self.zoom, self.ctx, self.device,
                          title=self.title)
        if axial is not None and any(v is not None for v in self.pairs_inputs):
            raise ValueError("clean='lateral' learns from the volume's own lateral planes; "
                             "training pairs (pairs_input/pairs_truth) do not apply to its axial "
                             "slices: leave them out.")
        self.pairs = _training_pairs(*self.pairs_inputs, params, c, self.operator, self.ctx,
                                     self.device, rng, augment=augment)
        return samplers

    def training(self, net, average, degraded, examples, rng, terms, preview_crop) -> Training:
        """``G`` against its critic(s), through the operator; the checkpoint kept is scored by
        :meth:`_score`."""
        import torch

        from ..engine.gan_parts import Keeper
        from ..engine.predict import Predictor

        params, device = self.params, self.device
        self.net, self.degraded, self.examples, self.terms = net, degraded, examples, terms
        self.state: dict = {}
        self.critics = self._critics(rng)
        opt = torch.optim.Adam(net.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
        self.val, *self.val_maps = degraded(max(4, params.batch_size))  # fixed crops: yardstick
        self.noise = input_noise(degraded.fields[0])
        self.draws = (torch.Generator(device=device).manual_seed(self.ctx.seed)
                      if params.synthetic_weight else None)  # the synthetic pairs' noise
        self.keeper = Keeper(average, score=self._score())
        preview_net = Predictor(average, device, scale=self.zoom)
        with torch.inference_mode():  # the input's own residual |H(y) - y|, for reference
            self.start = float(self._residual(lambda y: y)) if self.zoom == 1 else float("nan")
        return Training(self._step, self._critics_step, opt, self.critics, self.keeper,
                        preview=lambda it: preview_net(preview_crop[None])[0], nets=(net,),
                        extra=self._extra, results=self._results)

    def _critics(self, rng) -> dict:
        """The critic of ``G(y)`` against the clean examples, and of ``H(G(y))`` against ``y``
        when ``data_adversarial_weight`` asks for it."""
        from ..engine.train import seeded_init

        params = self.params
        with seeded_init(self.ctx.seed + 1):
            disc = self.discriminator(params.patch_size * self.zoom, params.disc_scales)
        critics = {"clean": self.critic(disc, rng)}
        if params.data_adversarial_weight:  # H(G(y)) against y, on the input's grid
            with seeded_init(self.ctx.seed + 2):
                disc = self.discriminator(params.patch_size, params.disc_scales)
            critics["data"] = self.critic(disc, rng)
        return critics

    def _residual(self, model):
        """The physics residual ``|H(G(y)) - y|`` of ``model`` on the fixed crops."""
        return interior((self.operator(model(self.val), *self.val_maps) - self.val).abs(),
                        self.margin).mean()

    def _score(self):
        """A checkpoint's score (the lowest is kept), and what it is scored by
        (``self.scored_by``): the QC pair's error, else the error on fixed synthetic pairs, else
        the distance of the physics residual from the noise floor (:func:`noise_floor`)."""
        import torch

        params, margin = self.params, self.margin
        if self.qc is not None:
            qc = self.qc
            self.scored_by = "QC pair"
            return lambda model: qc_error(model(qc[0]), qc[1])
        if params.synthetic_weight:  # fixed synthetic pairs: a yardstick with a truth
            with torch.no_grad():
                (val_x,) = self.examples(max(4, params.batch_size))
                val_y = self.operator(val_x, *self.val_maps)
                val_y = val_y + self.noise.sample(val_y, self.draws)
            self.scored_by = "synthetic pairs"
            return lambda model: interior((model(val_y) - val_x).abs(), margin, params.zoom).mean()
        # the discrepancy principle: explain y down to its noise, not further
        self.floor = noise_floor(self.noise, self.val, margin)
        self.scored_by = "physics residual"

        def score(model):
            self.state["residual"] = self._residual(model)
            return (self.state["residual"] - self.floor).abs()

        return score

    def _step(self, it: int):
        """The generator's loss: physics, adversarial (clean and data), synthetic and paired."""
        import torch

        from ..engine.gan_losses import generator_loss

        params, terms, net, state, margin = (self.params, self.terms, self.net, self.state,
                                             self.margin)
        y, *maps = self.degraded(params.batch_size)
        (x,) = self.examples(params.batch_size)
        fake = net(y)
        state["fake"], state["real"] = fake, x
        seen = self.operator(fake, *maps)
        loss = terms("physics", interior((seen - y).abs(), margin).mean(), params.physics_weight)
        if params.data_adversarial_weight:
            state["seen"], state["y"] = seen, y
            loss = loss + terms("G_data", generator_loss(self.critics["data"].judge(seen)),
                                params.data_adversarial_weight)
        if params.adversarial:
            loss = loss + terms("G", generator_loss(self.critics["clean"].judge(fake)),
                                params.adversarial)
        if params.synthetic_weight:
            with torch.no_grad():
                degraded = self.operator(x, *maps)  # dehaze: the input's haze maps, elsewhere
                degraded = degraded + self.noise.sample(degraded, self.draws)
            miss = interior((net(degraded) - x).abs(), margin, params.zoom).mean()
            loss = loss + terms("synthetic", miss, params.synthetic_weight)
        if self.pairs is not None:
            a, b = self.pairs(params.batch_size)
            miss = interior((net(a) - b).abs(), margin).mean()
            loss = loss + terms("paired", miss, params.paired_weight)
        return loss

    def _critics_step(self, it: int) -> None:
        state = self.state
        if self.params.adversarial:
            self.critics["clean"].update(state["real"], state["fake"])
        if self.params.data_adversarial_weight:
            self.critics["data"].update(state.pop("y"), state.pop("seen"))
        state.pop("fake")

    def _extra(self) -> dict:
        if self.scored_by == "physics residual":
            return {"physics_residual": float(self.state.get("residual", float("nan"))),
                    "noise_floor": self.floor}
        return {"qc_error" if self.qc is not None else "synthetic_error": self.keeper.last}

    def _results(self, kept) -> dict:
        """The kept generator's physics residual against the input's own, how it was chosen,
        and a warning when it explains the input less well than the input itself."""
        import torch

        with torch.inference_mode():
            kept_residual = float(self._residual(kept))
        start = self.start
        result = {"physics_residual": kept_residual, "input_residual": start,
                  "checkpoint_by": self.scored_by,  # the noise's own level on the same crops:
                  "noise_level": noise_floor(self.noise, self.val, self.margin) / DISCREPANCY}
        if self.scored_by == "physics residual":
            result["noise_floor"] = self.floor
        elif self.qc is not None:
            result["qc_error"] = self.keeper.best
        elif self.params.synthetic_weight:
            result["synthetic_error"] = self.keeper.best
        if kept_residual > start:  # the estimate explains y worse than y itself does
            result["warning"] = (f"the restored image explains the input less well than the "
                                 f"input itself (physics residual {kept_residual:.3g} against "
                                 f"{start:.3g}): the adversarial term dominates; raise "
                                 "physics_weight or train longer, and check the residual map")
            logger.warning("physics-gan: %s", result["warning"])
        return result

    def write(self, i: int, plane: np.ndarray) -> None:
        """The restored plane and its residual map ``|H(x) - y|``, in the input's units."""
        source = self.axial.slices[i] if self.axial is not None else self.planes[i]
        maps = () if self.haze is None else (self.haze.transmission(source),)
        residual = residual_map(self.operator, plane, source, self.device, maps=maps,
                                zoom=self.zoom)
        if self.axial is not None:
            self.axial.add(i, plane, residual)
        else:
            self.out["image"][i] = plane
            self.out["residual"][i] = residual * self.ctx.scale

    def finish(self, done: int) -> int:
        if self.axial is None:
            return done
        return self.axial.write(self.out["image"], self.out["residual"], self.ctx.scale,
                                complete=done == len(self.sources))


def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None, psf=None,
        qc_input=None, qc_truth=None, pairs_input=None, pairs_truth=None):
    """Train G (or load it), then restore every plane and its residual map, streamed; with
    ``clean='lateral'`` the axial slices of the volume (see :func:`_axial_slices`)."""
    return (yield from run_unpaired(PhysicsGAN(planes, params, ctx, out, clean, psf,
                                               qc=(qc_input, qc_truth),
                                               pairs=(pairs_input, pairs_truth))))


def _training_pairs(pairs_input, pairs_truth, params: Params, channels: int, operator,
                    ctx: RunContext, device, rng, *, augment):
    """The registered training pairs (see
    :func:`~napari_ssl_restore.engine.known_operator.training_pairs`), for the tasks whose
    operator is the same on every image: 'deconv' and 'denoise'."""
    if pairs_input is not None and pairs_truth is not None \
            and params.task not in ("deconv", "denoise"):
        raise ValueError(f"Physics-GAN: training pairs are for task 'deconv' or 'denoise' (same "
                         f"size, an operator without per-image maps); got task={params.task!r}. "
                         "Give the pair as qc_input=/qc_truth= to choose the checkpoint instead.")
    return training_pairs(pairs_input, pairs_truth, channels, params.patch_size, operator, ctx,
                          device, rng, augment=augment, title="Physics-GAN")


TRAINING = tuple(TRAIN.items())
PAIRED = TRAINING + (("task", ("deconv", "denoise")),)
"""When the QC pair and the training pairs are asked for (widget)."""

def _standing(settings) -> str:
    """Where the task's defaults stand against the classical baseline (docs/benchmarks, issue 32)."""
    task = settings.get("task", "deconv")
    if task == "deconv":
        return ("Measured at these defaults: level with the best Richardson-Lucy on real tissue "
                "crops (-0.04 dB) and +0.27 dB on held-out fluorescence crops, in minutes instead "
                "of seconds: use richardson-lucy unless clean examples match your data closely.")
    if task == "dehaze":
        return ("Measured on three hazy widefield fields: 0.9 dB under the Dark Channel Prior "
                "with the same patch, at every setting tried; for haze use dcp or cycle-dehaze.")
    if task == "denoise":
        return ("Not measured against a classical denoiser: classic-denoise and dncnn are "
                "(docs/benchmarks).")
    return ""


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
        clean_examples("Clean examples of similar samples (confocal, deconvolved)", ("lateral",),
                       "; or 'lateral': a Z stack's own XY planes, for its axial slices (cubic "
                       "voxels, task 'deconv' with axial_sigma or a 3-D psf)"),
        ExtraInput("psf", "Point-spread function for task 'deconv': 2-D, or 3-D (Z, Y, X) with "
                          "clean='lateral'; a Gaussian of psf_sigma (and axial_sigma) when "
                          "omitted.", when=(("task", ("deconv",)),)),
        ExtraInput("qc_input", "Optional QC pair, degraded side: one plane acquired like the "
                               "image (a field not in it, ideally); with qc_truth, the checkpoint "
                               "kept is the one that restores it best.", when=TRAINING),
        ExtraInput("qc_truth", "Optional QC pair, clean side: the same field as qc_input, "
                               "registered (sr: sr_factor times larger), any units.",
                   when=TRAINING),
        ExtraInput("pairs_input", "Optional training pairs, degraded side (deconv, denoise): "
                                  "images acquired like the image; with pairs_truth they train G "
                                  "directly (paired_weight).", when=PAIRED),
        ExtraInput("pairs_truth", "Optional training pairs, clean side: the same fields as "
                                  "pairs_input, registered, same shape, any units.",
                   when=PAIRED),
    ),
    scaling="percentile",
    uses_torch=True,
    linked_planes=trains_on_the_stack,
    zoom_of=lambda p: p.zoom,
    standing=_standing,
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
