"""Physics-based GAN (Pan, Dong, Ren, Lin, Tang, Yang; TPAMI 2020): restore through a known operator
with an adversarial prior learned from *unpaired* clean examples.

A generator ``G`` maps the degraded image ``y`` to an estimate ``x = G(y)`` under two pressures:

- **physics**: pushed back through the known degradation ``H`` the estimate must reproduce the
  input, ``L1(H(G(y)), y)`` weighted 10 as the authors do — ``H`` is a PSF blur (``deconv``: the
  given PSF or a Gaussian of ``psf_sigma``), an anti-aliased ×2/×4 downsampling (``sr``), the haze
  model ``x t + A (1 - t)`` with the Dark Channel Prior's transmission ``t`` and airlight ``A``
  (``dehaze``) or the identity (``denoise``); the blur and downsampling are Deep Image Prior's
  (:mod:`napari_ssl_restore.core.operators`), the haze estimate DCP's
  (:mod:`napari_ssl_restore.core.haze`). On training crops the term is scored inside the operator's
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
noise (:data:`DISCREPANCY`), since the lowest residual is the estimate that fits the noise too.
When the kept estimate explains the input less well than the input itself (``|H(y) - y|``), the
provenance says so (``warning``). A NaN loss ends training with the best checkpoint, saying so.

Deviations: the generator is CycleGAN's ResNet generator with resize-convolution upsampling and a
global skip (starts as the identity / nearest upsampling), without normalisation so tiles of a
large plane agree exactly (instance norm, as in the authors' code, makes them disagree), and by
default without its two downsamplings (``downs=0``: every layer at full resolution, the same
arithmetic per pixel; measured on the README's deconvolution benchmark, +2.3 dB over ``downs=2``);
smaller defaults (32 features, 6 blocks, 64² crops) so it trains on a laptop CPU. Added (not in
the paper, on by default): ``synthetic_weight`` — the clean examples degraded by the same ``H``
and by noise estimated from the input (:func:`napari_ssl_restore.core.noise.noise_of_image`) give
synthetic pairs, ``L1(G(H(x) + n), x)`` weighted 10; the unpaired data and the known physics then
also supervise ``G`` directly (``synthetic_weight=0`` is the paper's loss; the README's benchmark
measures both, and that the adversarial term costs PSNR there: ``adversarial_weight=0`` scores
best, the GAN's sharpness is paid for in distortion, as Blau & Michaeli 2018 predict). The
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
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ..engine.adversarial import (TRAIN, UnpairedParams, clean_examples,
                                  trains_on_the_stack)
from ..engine.planes import Outputs, Planes
from ._public import public_function

logger = logging.getLogger(__name__)

TASKS = ("deconv", "sr", "dehaze", "denoise")


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
    adversarial_weight: float = param(1.0, "Weight of the adversarial term (0: physics only, "
                                           "for the ablation).", min=0.0, max=1e3, step=0.1,
                                      when=TRAIN, advanced=True)
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


# --- the operator ----------------------------------------------------------------------------------

def make_operator(params: Params, psf, device, haze=None, axial=None):
    """``H(x, *maps)`` for the task, on ``(N, C, H, W)`` tensors (``maps``: the transmission crop
    for 'dehaze', nothing otherwise), and its reach ``(rows, columns)`` in input pixels: within
    that margin of a crop's border ``H(G(y))`` depends on the padding, not on ``G(y)`` (see
    :func:`interior`)."""
    from ..core.operators import LANCZOS_A, blur, downsample, psf_kernel

    if axial is not None:  # axial slices, Z vertical: the blur the lateral planes lack
        kernel = axial_kernel(params, psf, device)
    elif params.task == "deconv":
        kernel = psf_kernel(psf, params.psf_sigma, device)
    elif params.task == "sr":
        return (lambda x, *_: downsample(x, params.sr_factor)), (LANCZOS_A, LANCZOS_A)
    elif params.task == "dehaze":
        return haze.apply, (0, 0)
    else:
        return (lambda x, *_: x), (0, 0)
    return (lambda x, *_: blur(x, kernel)), (kernel.shape[0] // 2, kernel.shape[1] // 2)


def axial_kernel(params: Params, psf, device):
    """The extra axial blur of an XZ slice over a lateral plane, as a ``(k, 1)`` kernel along Z
    (rows): Gaussian of std ``sqrt(axial² - lateral²)``, the widths from a 3-D ``psf`` (second
    moments, see :func:`~napari_ssl_restore.core.operators.psf_widths`) or ``psf_sigma`` and
    ``axial_sigma``."""
    import torch

    from ..core.operators import gaussian_kernel_1d, psf_widths

    if psf is not None:
        lateral, axial = psf_widths(psf)
        source = f"the 3-D psf's widths (lateral {lateral:.2f}, axial {axial:.2f} px)"
    else:
        lateral, axial = params.psf_sigma, params.axial_sigma
        source = f"axial_sigma {axial:g} and psf_sigma {lateral:g}"
    if axial <= lateral:
        raise ValueError(f"clean='lateral': {source} leave no axial blur to undo; set axial_sigma "
                         "(pixels, Z sampled like X) above psf_sigma, or give the 3-D psf=.")
    k = gaussian_kernel_1d(float(np.sqrt(axial ** 2 - lateral ** 2)))
    return torch.from_numpy(k[:, None]).to(device)


class Haze:
    """The haze model of the Dark Channel Prior (He, Sun & Tang 2009) as the known operator:
    ``H(x) = x t + A (1 - t)``, with the airlight ``A`` shared by the stack (from at most four
    planes spread over it) and each plane's transmission ``t`` from its dark channel, refined by
    the guided filter (:mod:`napari_ssl_restore.core.haze`; DCP's ω 0.95, ``patch`` 15 and guided
    radius 60 by default). Intensities are the
    normalised input's, clipped to [0, 1] for the estimate."""

    def __init__(self, planes, device, patch: int = 15):
        import torch

        from ..core.haze import dark_channel, estimate_airlight
        from ..engine.train import spread

        lights = []
        for i in spread(len(planes), 4):
            planar = self._planar(planes[i])
            lights.append(estimate_airlight(planar, dark_channel(planar, patch), 0.001))
        self.patch = patch
        self.airlight = np.mean(lights, axis=0).astype(np.float32)
        self._a = torch.from_numpy(self.airlight).to(device).view(1, -1, 1, 1)

    @staticmethod
    def _planar(plane: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.clip(plane, 0.0, 1.0).transpose(2, 0, 1))

    def transmission(self, plane: np.ndarray) -> np.ndarray:
        """``t`` of an ``(H, W, C)`` plane, as ``(H, W, 1)``."""
        from ..core.haze import refined_transmission

        return refined_transmission(self._planar(plane), self.airlight, patch_size=self.patch,
                                    guided_radius=4 * self.patch)[..., None]

    def apply(self, x, t):
        return x * t + self._a * (1.0 - t)


def interior(x, margin: tuple[int, int], zoom: int = 1):
    """``x`` without ``margin`` (rows, columns; times ``zoom`` on an upsampled grid) at each
    border, at most a quarter of each side: the physics term is scored where ``H(G(y))`` sees
    ``G(y)`` and not the operator's padding of a small crop (a 64² crop blurred by a σ = 2 PSF is
    padded over a third of its pixels)."""
    h, w = x.shape[-2:]
    my, mx = (min(m * zoom, side // 4) for m, side in zip(margin, (h, w)))
    return x[..., my:h - my, mx:w - mx]


# --- the generator -------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs, clean=None, psf=None,
        qc_input=None, qc_truth=None, pairs_input=None, pairs_truth=None):
    """Train G (or load it), then restore every plane and its residual map, streamed; with
    ``clean='lateral'`` the axial slices of the volume (see :class:`Axial`)."""
    from ..core.device import resolve_device
    from ..core.models import build
    from ..engine.adversarial import keep_trained, saved_generator, unpaired_data
    from ..engine.predict import Predictor, predict_after_training
    from ..engine.train import seeded_init
    from ..nets.gan import ResnetGenerator

    device = resolve_device(ctx.device)
    rng = np.random.default_rng(ctx.seed)
    c, zoom = planes.c, params.zoom
    axial = Axial(planes, params, ctx) if isinstance(clean, str) else None  # clean='lateral'
    haze = Haze(planes, device, params.haze_patch) if params.task == "dehaze" else None
    operator, margin = make_operator(params, psf, device, haze, axial)
    ckpt = saved_generator(params.model, c, zoom)
    if ckpt is not None:
        net = build(ckpt, device)
    else:
        with seeded_init(ctx.seed):
            net = ResnetGenerator(c, c, params.features, params.blocks, downs=params.downs,
                                  scale=zoom, norm="none")
        net = net.to(device)
    info: dict = {"device": str(device), "trained_steps": 0, "stopped": False, "zoom": zoom}
    total, stopped = 0, False
    sources = axial.slices if axial is not None else planes  # what G restores
    if params.mode == "train":
        y_sampler, x_sampler, preview_crop = unpaired_data(
            axial.training if axial is not None else planes,
            axial.lateral_planes() if axial is not None else clean,
            patch=params.patch_size, zoom=zoom, device=device, rng=rng, title="Physics-GAN",
            rescale=lambda x, *maps: _in_input_units(x, operator, *maps),
            aligned=haze.transmission if haze is not None else None,
            augment=_augmentation(params, psf, axial))
        total = params.steps
        qc = _qc_pair(qc_input, qc_truth, c, zoom, ctx, device)
        if axial is not None and (pairs_input is not None or pairs_truth is not None):
            raise ValueError("clean='lateral' learns from the volume's own lateral planes; "
                             "training pairs (pairs_input/pairs_truth) do not apply to its axial "
                             "slices: leave them out.")
        pairs = _training_pairs(pairs_input, pairs_truth, params, c, operator, ctx, device, rng,
                                augment=_augmentation(params, psf, axial))
        fit = yield from _train(net, operator, margin, y_sampler, x_sampler, params, ctx, rng,
                                total=total, grand_total=total + len(sources),
                                preview_crop=preview_crop, qc=qc, pairs=pairs)
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

    def residual(plane: np.ndarray, source: np.ndarray):
        """``|H(x) - y|`` of a restored plane and its input, mean over channels."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(plane.transpose(2, 0, 1)))[None].to(device)
            y = torch.from_numpy(np.ascontiguousarray(source.transpose(2, 0, 1)))[None]
            maps = () if haze is None else (
                torch.from_numpy(haze.transmission(source).transpose(2, 0, 1))[None].to(device),)
            r = (operator(x, *maps).cpu() - y).abs().mean(1)[0].numpy()
        if zoom > 1:  # on the output's grid, so the two layers overlay
            r = np.repeat(np.repeat(r, zoom, axis=0), zoom, axis=1)
        return r

    def write(i: int, plane: np.ndarray) -> None:
        if axial is not None:
            axial.add(i, plane, residual(plane, axial.slices[i]))
            return
        out["image"][i] = plane
        out["residual"][i] = residual(plane, planes[i]) * ctx.scale  # in the input's units

    done, stopped = yield from predict_after_training(predictor, sources, write, step0=total,
                                                      stopped=stopped, verb="restoring")
    if axial is not None:
        done = axial.write(out, ctx.scale, complete=done == len(sources))
    info.update(planes_done=done, stopped=stopped)
    return MethodResult({}, info, {"model": ckpt_out})


class Axial:
    """``clean='lateral'``: an anisotropic volume's own lateral (XY) planes are the clean examples
    for its axial slices (Neuroclear's idea: Park et al., Nat. Commun. 2022 — the lateral
    resolution is what the axial one should be). Training crops the XZ slices (one per Y, ``(Z,
    X)``, Z vertical; left-right flips only, a rotation would turn Z sideways); prediction restores
    the XZ and the YZ slices and averages the two estimates of each voxel, then writes the volume
    plane by plane. The volume must be sampled with cubic voxels (resample Z to the XY pixel size
    first) and holds three float32 copies in memory (input, sum, residual): this mode does not
    stream."""

    def __init__(self, planes, params: Params, ctx: RunContext):
        if "Z" not in ctx.axes or "T" in ctx.axes:
            raise ValueError(f"clean='lateral' needs one Z stack (axes ZYX); got axes "
                             f"{ctx.axes.replace('C', '')!r}. Give clean examples instead, or "
                             "restore one time point at a time.")
        if params.task != "deconv":
            raise ValueError("clean='lateral' restores the axial blur: use task='deconv' (with "
                             f"axial_sigma or a 3-D psf=); got task={params.task!r}.")
        z = len(planes)
        if z < params.patch_size:
            raise ValueError(f"clean='lateral' crops axial slices at patch_size {params.patch_size} "
                             f"but the stack has {z} Z planes: lower patch_size to at most {z}, "
                             "or resample Z to the XY pixel size first (cubic voxels).")
        self.volume = planes.stack()  # (Z, H, W, C), normalised
        self.sum = np.zeros_like(self.volume)
        self.residual = np.zeros(self.volume.shape[:-1], np.float32)
        h, w = self.volume.shape[1:3]
        self.h = h
        self.slices = _Slices(self.volume, h, w)
        self.training = _Slices(self.volume, h, 0)  # the XZ slices

    def lateral_planes(self) -> list:
        return [self.volume[..., 0] if self.volume.shape[-1] == 1 else self.volume]

    def add(self, i: int, plane: np.ndarray, residual: np.ndarray) -> None:
        if i < self.h:
            self.sum[:, i] += plane
            self.residual[:, i] += residual
        else:
            self.sum[:, :, i - self.h] += plane
            self.residual[:, :, i - self.h] += residual

    def write(self, out, scale: float, *, complete: bool) -> int:
        from ..core.progress import StopRequested

        if not complete:  # a Stop while restoring: a half-restored volume is no result
            raise StopRequested("Stopped while restoring the axial slices; nothing was written.")
        for k in range(len(self.volume)):
            out["image"][k] = self.sum[k] / 2
            out["residual"][k] = self.residual[k] * (scale / 2)
        return len(self.volume)


class _Slices:
    """The first ``xz`` XZ slices, then the first ``yz`` YZ slices, of a ``(Z, H, W, C)`` volume,
    as planes ``(Z, ·, C)`` (the planes interface :func:`unpaired_data` and the predictor read)."""

    def __init__(self, volume: np.ndarray, xz: int, yz: int):
        self.volume, self.xz, self.yz = volume, xz, yz
        self.c = volume.shape[-1]
        self.hw = (volume.shape[0], volume.shape[2] if xz else volume.shape[1])

    def __len__(self) -> int:
        return self.xz + self.yz

    def __getitem__(self, i: int) -> np.ndarray:
        v = self.volume
        return v[:, i] if i < self.xz else v[:, :, i - self.xz]

    def stack(self, indices) -> np.ndarray:
        return np.stack([self[i] for i in indices])


def _augmentation(params: Params, psf, axial) -> bool | str:
    """The degraded crops' augmentation: every flip and rotation where the operator is invariant
    to them (Gaussian PSF, downsampling, haze, identity); for a measured PSF only the ones it is
    symmetric under; for axial slices left-right flips."""
    if axial is not None:
        return "flips"
    if params.task != "deconv" or psf is None:
        return True
    from ..core.operators import check_psf

    k = check_psf(psf)
    flips = np.allclose(k, k[:, ::-1], atol=1e-4 * k.max())
    if flips and k.shape[0] == k.shape[1] and np.allclose(k, k.T, atol=1e-4 * k.max()) \
            and np.allclose(k, k[::-1], atol=1e-4 * k.max()):
        return True
    return "flips" if flips else False


def _train(net, operator, margin: tuple[int, int], y_sampler, x_sampler, params: Params,
           ctx: RunContext, rng, *, total: int, grand_total: int, preview_crop: np.ndarray, qc=None,
           pairs=None):
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
    critics = {"clean": critic}
    if params.data_adversarial_weight:  # H(G(y)) against y, on the input's grid
        with seeded_init(ctx.seed + 2):
            data_disc = MultiScaleDiscriminator(c, params.disc_features,
                                                patch_layers(params.patch_size),
                                                params.disc_scales, spectral=params.spectral_norm)
        critics["data"] = Critic(data_disc.to(device), lr=params.learning_rate, rng=rng)
    ema = EMA(net, params.ema_decay)
    opt = torch.optim.Adam(net.parameters(), lr=params.learning_rate, betas=(0.5, 0.999))
    val, *val_maps = y_sampler(max(4, params.batch_size))  # fixed crops: the residual's yardstick

    def residual(model):
        return interior((operator(model(val), *val_maps) - val).abs(), margin).mean()

    terms, state = Terms(), {}
    noise = _input_noise(y_sampler.fields[0])
    if params.synthetic_weight:
        generator = torch.Generator(device=device).manual_seed(ctx.seed)
    if qc is not None:
        score, scored_by = (lambda model: _qc_error(model(qc[0]), qc[1])), "QC pair"
    elif params.synthetic_weight:  # fixed synthetic pairs: a yardstick with a truth
        with torch.no_grad():
            (val_x,) = x_sampler(max(4, params.batch_size))
            val_y = operator(val_x, *val_maps)
            val_y = val_y + noise.sample(val_y, generator)

        def score(model):
            return interior((model(val_y) - val_x).abs(), margin, params.zoom).mean()
        scored_by = "synthetic pairs"
    else:  # the discrepancy principle: explain y down to its noise, not further
        with torch.inference_mode():
            floor = DISCREPANCY * float(interior(noise.mean_abs(val), margin).mean())

        def score(model):
            state["residual"] = residual(model)
            return (state["residual"] - floor).abs()
        scored_by = "physics residual"
    keeper = Keeper(ema.average, score=score)

    def step(it: int):
        y, *maps = y_sampler(params.batch_size)
        (x,) = x_sampler(params.batch_size)
        fake = net(y)
        state["fake"], state["real"] = fake, x
        seen = operator(fake, *maps)
        loss = terms("physics", interior((seen - y).abs(), margin).mean(), params.physics_weight)
        if params.data_adversarial_weight:
            state["seen"], state["y"] = seen, y
            loss = loss + terms("G_data", generator_loss(critics["data"].judge(seen)),
                                params.data_adversarial_weight)
        if params.adversarial_weight:
            loss = loss + terms("G", generator_loss(critic.judge(fake)), params.adversarial_weight)
        if params.synthetic_weight:
            with torch.no_grad():
                degraded = operator(x, *maps)  # dehaze: the input's haze maps, elsewhere
                degraded = degraded + noise.sample(degraded, generator)
            miss = interior((net(degraded) - x).abs(), margin, params.zoom).mean()
            loss = loss + terms("synthetic", miss, params.synthetic_weight)
        if pairs is not None:
            a, b = pairs(params.batch_size)
            miss = interior((net(a) - b).abs(), margin).mean()
            loss = loss + terms("paired", miss, params.paired_weight)
        return loss

    def after_step(it: int) -> None:
        if params.adversarial_weight:
            critic.update(state["real"], state["fake"])
        if params.data_adversarial_weight:
            critics["data"].update(state.pop("y"), state.pop("seen"))
        ema.update()
        state.pop("fake")

    def extra() -> dict:
        if scored_by == "physics residual":
            return {"physics_residual": float(state.get("residual", float("nan"))),
                    "noise_floor": floor}
        return {"qc_error" if qc is not None else "synthetic_error": keeper.last}

    describe = reporter(total, terms, critics, extra=extra)

    preview_net = Predictor(ema.average, device, scale=params.zoom)

    def preview(it: int):
        return preview_net(preview_crop[None])[0]

    with torch.inference_mode():  # the input's own residual |H(y) - y|, for reference
        start = (float(interior((operator(val, *val_maps) - val).abs(), margin).mean())
                 if params.zoom == 1 else float("nan"))
    net.train()
    loop = yield from optimise(step, opt, total, after_step=after_step, finished=keeper.check,
                               check_every=params.check_every, describe=describe,
                               preview=preview, preview_every=params.check_every,
                               total=grand_total)
    if not keeper.diverged:
        keeper.check(loop.steps)  # score the final weights too
    kept = keeper.restore("Physics-GAN")
    with torch.inference_mode():
        kept_residual = float(residual(kept))
    result = {"net": kept, "steps": loop.steps, "stopped": loop.stopped, "nan": keeper.diverged,
              "best_step": keeper.best_step, "physics_residual": kept_residual,
              "input_residual": start, "checkpoint_by": scored_by}
    if scored_by == "physics residual":
        result["noise_floor"] = floor
    elif qc is not None:
        result["qc_error"] = keeper.best
    elif params.synthetic_weight:
        result["synthetic_error"] = keeper.best
    if kept_residual > start:  # the estimate explains y worse than y itself does
        result["warning"] = (f"the restored image explains the input less well than the input "
                             f"itself (physics residual {kept_residual:.3g} against "
                             f"{start:.3g}): the adversarial term dominates; raise "
                             "physics_weight or train longer, and check the residual map")
        logger.warning("physics-gan: %s", result["warning"])
    return result


DISCREPANCY = 1.05
"""Morozov's τ: without a truth (no QC pair, no synthetic pairs) the checkpoint kept is the one
whose physics residual is nearest τ times the input's estimated noise (its mean absolute value).
The lowest residual would keep the estimate that fits the noise too (measured: deconvolution with
the physics term alone falls from 25.8 to 19.9 dB as its residual sinks below the noise); Morozov's
rule asks τ > 1, and 1.05 was chosen on the benchmark's first field."""

QC_SIDE = 256
"""Largest side (input pixels) of the QC pair scored at each check (centre crop)."""


def _qc_pair(qc_input, qc_truth, channels: int, zoom: int, ctx: RunContext, device):
    """The paired QC image (``qc_input``: a degraded acquisition in the input's units;
    ``qc_truth``: its clean counterpart, any units, ``zoom`` times larger for 'sr') as device
    tensors, centre-cropped to ``QC_SIDE``; ``None`` when not given. Errors name the mismatch."""
    import torch

    if qc_input is None and qc_truth is None:
        return None
    if qc_input is None or qc_truth is None:
        raise ValueError("Physics-GAN: a QC pair needs both qc_input= (a degraded image) and "
                         "qc_truth= (the same field, clean); give both or neither.")
    pair = []
    for name, arr in (("qc_input", qc_input), ("qc_truth", qc_truth)):
        arr = np.asarray(arr, np.float32)
        arr = arr[..., None] if arr.ndim == 2 else arr
        if arr.ndim != 3 or arr.shape[-1] != channels:
            raise ValueError(f"Physics-GAN: {name} must be one plane (Y, X) with the image's "
                             f"{channels} channel(s) last; got shape {arr.shape}.")
        pair.append(arr)
    (h, w), (th, tw) = pair[0].shape[:2], pair[1].shape[:2]
    if (th, tw) != (h * zoom, w * zoom):
        raise ValueError(f"Physics-GAN: qc_truth is {th}x{tw} but must be qc_input's {h}x{w} "
                         f"times {zoom} (the same field, registered).")
    s = min(QC_SIDE, h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    degraded = (pair[0][y0:y0 + s, x0:x0 + s] - ctx.offset) / ctx.scale
    truth = pair[1][y0 * zoom:(y0 + s) * zoom, x0 * zoom:(x0 + s) * zoom]
    return tuple(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].to(device)
                 for a in (degraded, truth))


def _training_pairs(pairs_input, pairs_truth, params: Params, channels: int, operator,
                    ctx: RunContext, device, rng, *, augment):
    """The user's registered training pairs as a sampler of aligned ``(a, b)`` crops on the device
    (``None`` when not given): ``a`` acquired like the image, in its normalised units; ``b`` the
    clean counterpart, any units, mapped by the gain and offset that best fit ``H(b)`` to ``a``
    (``H`` is linear and keeps constants, so ``H`` of the mapped ``b`` then matches ``a``: the
    units the physics term gives ``G(y)``). Errors name what is missing or mismatched."""
    import torch

    from ..engine.train import PatchSampler, to_device

    if pairs_input is None and pairs_truth is None:
        return None
    if pairs_input is None or pairs_truth is None:
        raise ValueError("Physics-GAN: training pairs need both pairs_input= (degraded images) "
                         "and pairs_truth= (the same fields, clean, registered); give both or "
                         "neither.")
    if params.task not in ("deconv", "denoise"):
        raise ValueError(f"Physics-GAN: training pairs are for task 'deconv' or 'denoise' (same "
                         f"size, an operator without per-image maps); got task={params.task!r}. "
                         "Give the pair as qc_input=/qc_truth= to choose the checkpoint instead.")

    def planes(v):  # (N, Y, X, C), or None when the shape does not fit the image's channels
        v = np.asarray(v, np.float32)
        if channels == 1 and v.ndim in (2, 3):
            return v.reshape((-1,) + v.shape[-2:] + (1,))
        if channels > 1 and v.ndim in (3, 4) and v.shape[-1] == channels:
            return v.reshape((-1,) + v.shape[-3:])
        return None

    a, b = planes(pairs_input), planes(pairs_truth)
    if a is None or b is None or a.shape != b.shape or min(a.shape[1:3]) < params.patch_size:
        raise ValueError(f"Physics-GAN: pairs_input {np.shape(pairs_input)} and pairs_truth "
                         f"{np.shape(pairs_truth)} must be registered images or stacks of them "
                         f"of the same shape, with the image's {channels} channel(s) last and "
                         f"each side at least patch_size ({params.patch_size}).")
    a, b = to_device((a - ctx.offset) / ctx.scale, device), to_device(b, device)
    with torch.no_grad():  # (not inference mode: the crops feed training)
        seen = torch.cat([operator(b[k:k + 1]) for k in range(len(b))])
        b = _gain(seen - seen.mean(), a - a.mean()) * (b - seen.mean()) + a.mean()
    return PatchSampler([a, b], [[k, k] for k in range(len(a))], params.patch_size, rng,
                        augment=augment)


def _qc_error(estimate, truth):
    """Mean squared error of ``estimate`` against ``truth`` after the best gain and offset (the
    truth's units are its own), relative to the truth's variance: 0 is perfect, 1 is no better than
    a flat image."""
    e, t = estimate - estimate.mean(), truth - truth.mean()
    return ((_gain(e, t) * e - t) ** 2).mean() / (t * t).mean().clamp_min(1e-12)


def _gain(x, y):
    """The least-squares gain from ``x`` to ``y`` (both centred): ``argmin_g |g x - y|²``."""
    return (x * y).sum() / (x * x).sum().clamp_min(1e-12)


def _input_noise(degraded):
    """The input's noise (:func:`~napari_ssl_restore.core.noise.noise_of_image`) from at most four
    of its training planes (``(N, C, H, W)`` on the device), in the normalised units training
    uses."""
    from ..core.noise import noise_of_image

    picks = degraded[:: max(1, len(degraded) // 4)][:4]
    return noise_of_image(picks.permute(0, 2, 3, 1).cpu().numpy())


def _in_input_units(examples, operator, *maps):
    """Clean examples rescaled so that *degraded* they span what the input spans: the input is
    normalised by its percentiles, and a blur lowers peaks, so clean examples normalised by their
    own percentiles would be dimmer at their peaks than the sharp image the physics term asks for,
    and the two terms would pull against each other. Percentiles (0.1, 99.9) of ``H(examples)``
    map to 0 and 1, like the input's (dehazing: under the median transmission of the input's
    ``maps``)."""
    import torch

    with torch.inference_mode():
        typical = [m.median() for m in maps]
        degraded = torch.cat([operator(examples[k:k + 8], *typical)
                              for k in range(0, len(examples), 8)])
        flat = degraded.flatten()[:: max(1, degraded.numel() // 2**22)].float()
        lo, hi = torch.quantile(flat, torch.tensor([0.001, 0.999], device=flat.device)).tolist()
    return (examples - lo) / max(hi - lo, 1e-6)


TRAINING = tuple(TRAIN.items())
PAIRED = TRAINING + (("task", ("deconv", "denoise")),)
"""When the QC pair and the training pairs are asked for (widget)."""

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
