"""The unpaired methods' driver, written once for the physics-based GAN, Cycle-Dehaze and
disentangled deblurring: load a saved generator (``mode="apply"``) or build one under the seed,
prepare the unpaired data, train on the engine's one loop
(:func:`napari_ssl_restore.engine.train.optimise`) with the generator's moving average, the
checkpoint keeper and the loss report (:mod:`.gan_parts`), keep and save the trained generator,
then restore every plane through the batched predictor.

A method supplies only its own parts as an :class:`UnpairedRun` subclass: its generator, its other
networks and the loss terms of one step (a :class:`Training`), and its per-plane outputs;
:func:`run_unpaired` does the rest and records one set of statistics (``trained_steps``,
``best_step``, ``nan``, ``planes_done``, ``stopped``, ...). Also here: the settings every unpaired
method has (:class:`UnpairedParams`), its ``clean=`` input, the unpaired samplers and the
checkpoint helpers.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from ..core.params import param
from .gan_parts import EMA, Critic, Keeper, Terms, patch_layers, reporter

# --- the settings the unpaired methods share -------------------------------------------------------

TRAIN: dict[str, Any] = {"mode": ("train",)}
"""``when=`` of the settings used only while training."""

_ADV: dict[str, Any] = {"when": TRAIN, "advanced": True}


@dataclasses.dataclass(frozen=True)
class UnpairedParams:
    """The settings every adversarial method has — train or apply, models, steps, crops, batch,
    learning rate, discriminator, weight averaging, checks, tiles — and their checks. A method's
    ``Params`` subclasses it, adds its own fields after these, and may re-declare one to change
    its default or wording (it keeps its place)."""

    method_title = "Unpaired training"

    mode: Literal["train", "apply"] = param(
        "train", "'train' on this image and the clean examples, then restore; 'apply' a saved "
                 "model (no clean examples needed).", choices=("train", "apply"))
    model: str = param("", "A saved model (.pt, or a bioimage.io zip this plugin exported) to "
                           "apply, or to start training from.", widget="open_file")
    save_model: str = param("", "Save the trained model here (.pt).", widget="save_file",
                            when=TRAIN)
    steps: int = param(2000, "Training steps (generators and discriminators).", min=1,
                       max=1_000_000, when=TRAIN)
    patch_size: int = param(64, "Side of the training crops.", min=16, max=1024, **_ADV)
    batch_size: int = param(2, "Crops per step.", min=1, max=256, **_ADV)
    learning_rate: float = param(2e-4, "Adam learning rate of every network (β1 = 0.5).",
                                 min=1e-7, max=1.0, step=1e-4, **_ADV)
    disc_features: int = param(32, "Discriminator channels of the first layer (PatchGAN: 64).",
                               min=4, max=256, **_ADV)
    spectral_norm: bool = param(False, "Spectral normalisation in the discriminators.", **_ADV)
    ema_decay: float = param(0.999, "Decay of the moving average of the restoring network's "
                                    "weights (0: the last weights).", min=0.0, max=0.99999,
                             step=0.001, **_ADV)
    check_every: int = param(100, "Steps between checkpoints and previews.", min=1,
                             max=100_000, **_ADV)
    tile_size: int = param(0, "Largest tile side for prediction; 0 = from the device's memory.",
                           min=0, max=8192, advanced=True)
    tile_overlap: int = param(32, "Overlap of prediction tiles, blended smoothly.", min=0,
                              max=1024, advanced=True)

    def __post_init__(self):
        title = self.method_title
        if self.mode == "apply" and not self.model:
            raise ValueError(f"{title}: mode='apply' needs model= (a .pt file saved by a "
                             "training run with save_model=); or use mode='train'.")
        if self.tile_size and self.tile_overlap >= self.tile_size:
            raise ValueError(f"{title}: tile_overlap must be smaller than tile_size.")


def clean_examples(what: str, keywords: tuple[str, ...] = (), also: str = ""):
    """The ``clean=`` input of an adversarial method (``what``: which examples, e.g. "Clear
    examples of similar samples (confocal, deconvolved)"; ``keywords`` and ``also``: words that
    stand for examples the method finds itself, and what they mean)."""
    from ..core.registry import ExtraInput

    return ExtraInput("clean", f"{what} for training: images or stacks of any size, not "
                               "registered to the input (a layer, an array, a list of arrays, or "
                               f"a file, folder or glob of TIFFs){also}.", examples=True,
                       keywords=keywords, when=tuple(TRAIN.items()))


def trains_on_the_stack(params) -> str:
    """``linked_planes`` of an adversarial method: training uses crops from the whole stack."""
    return ("mode='train' trains on crops from the whole stack (train once with save_model=, then "
            "use mode='apply' and model=)" if params.mode == "train" else "")


# --- the unpaired data and the checkpoints ---------------------------------------------------------

MIN_USEFUL_STEPS = 50
"""A Stop before this many training steps keeps nothing (the generator has not learned yet)."""


def example_stack(clean, channels: int, need: int):
    """The clean examples (a list of arrays: images or stacks, any sizes) as ``(K, H, W, C)``
    float32, normalised together (percentiles 0.1/99.9 of all of them); examples of different
    sizes are centre-cropped to the smallest, which must be at least ``need`` on a side."""
    from ..core.normalize import percentile_scaling

    planes: list[np.ndarray] = []
    for arr in (clean if isinstance(clean, (list, tuple)) else [clean]):
        arr = np.asarray(arr, dtype=np.float32)
        if channels == 1:
            if arr.ndim == 2:
                arr = arr[None]
            if arr.ndim != 3:
                raise ValueError(f"clean examples must be images (Y, X) or stacks (K, Y, X) like "
                                 f"the image; got shape {arr.shape}.")
            arr = arr[..., None]
        else:
            if arr.ndim == 3:
                arr = arr[None]
            if arr.ndim != 4 or arr.shape[-1] != channels:
                raise ValueError(f"clean examples must have the image's {channels} channels last "
                                 f"((Y, X, C) or (K, Y, X, C)); got shape {arr.shape}.")
        planes.extend(arr)
    h = min(p.shape[0] for p in planes)
    w = min(p.shape[1] for p in planes)
    if min(h, w) < need:
        raise ValueError(f"clean examples are as small as {h}x{w} pixels but training crops them "
                         f"at {need}x{need}; give larger examples or a smaller patch_size.")
    stack = np.stack([p[(p.shape[0] - h) // 2:(p.shape[0] - h) // 2 + h,
                        (p.shape[1] - w) // 2:(p.shape[1] - w) // 2 + w] for p in planes])
    scaling = percentile_scaling(stack.reshape(-1)[:: max(1, stack.size // (16 * 2**20))])
    return scaling.forward(stack).astype(np.float32)


def unpaired_data(planes, clean, *, patch: int, device, rng, title: str, zoom: int = 1,
                  rescale=None, aligned=None, augment: bool | str = True):
    """The two unpaired training sets on the device: crops of the degraded planes (a long stack
    trains on planes spread over it) and crops of the clean examples (``patch * zoom`` on a side,
    optionally mapped by ``rescale``). ``aligned(plane) -> (H, W, K)`` adds a map per degraded
    plane that the degraded sampler crops at the same windows (e.g. a haze transmission), and
    ``rescale`` then takes those maps too. ``augment`` is the degraded crops' (see
    :class:`~napari_ssl_restore.engine.train.PatchSampler`: fewer when the operator is not
    invariant to rotations or flips); the clean crops are always augmented. Returns ``(degraded
    sampler, clean sampler, preview crop)``; errors name what is missing or too small."""
    from .predict import centre_crop
    from .train import TRAIN_BYTES, PatchSampler, planes_within, spread, to_device

    if clean is None:
        raise ValueError(f"{title} trains against clean examples: give clean= (a stack of clean "
                         "images of similar samples, any size, not registered; CLI --clean FILE) "
                         "or use mode='apply' with a saved model.")
    if min(planes.hw) < patch:
        raise ValueError(f"patch_size {patch} is larger than the image ({planes.hw[0]}x"
                         f"{planes.hw[1]}); choose at most {min(planes.hw)}.")
    examples = to_device(example_stack(clean, planes.c, patch * zoom), device)
    plane_bytes = int(np.prod(planes.hw)) * planes.c * 4
    chosen = spread(len(planes), planes_within(TRAIN_BYTES, plane_bytes))
    fields = [to_device(planes.stack(chosen), device)]
    if aligned is not None:
        fields.append(to_device(np.stack([aligned(planes[i]) for i in chosen]), device))
    if rescale is not None:
        examples = rescale(examples, *fields[1:])
    y = PatchSampler(fields, [[k] * len(fields) for k in range(len(chosen))], patch, rng,
                     augment=augment)
    x = PatchSampler([examples], [[k] for k in range(len(examples))], patch * zoom, rng,
                     augment=True)
    return y, x, centre_crop(planes[chosen[0]], 128)


def saved_generator(path: str, channels: int, zoom: int = 1):
    """The checkpoint at ``path`` (``model=``) checked against this run, or ``None``."""
    from ..core.models import load_checkpoint

    if not path:
        return None
    ckpt = load_checkpoint(path)
    cfg = ckpt["config"]
    if cfg.get("in_channels") != channels or cfg.get("scale", 1) != zoom:
        raise ValueError(f"model {path!r} maps {cfg.get('in_channels')} channel(s) at "
                         f"x{cfg.get('scale', 1)}; this run needs {channels} channel(s) at x{zoom}.")
    return ckpt


def keep_trained(fit: dict, info: dict, *, method: str, architecture: str, params, seed: int,
                 resumed: bool):
    """After training: refuse a Stop that came before the generator learned anything (unless it
    resumed a saved model); else the network kept (``fit["net"]``) and its checkpoint with its
    provenance, saved to ``params.save_model`` when set. ``info`` gets the fit's statistics (and
    ``model_saved``). Returns ``(net, checkpoint)``."""
    from ..core.models import checkpoint, save_model
    from ..core.progress import StopRequested

    net = fit.pop("net")
    if fit["stopped"] and not resumed and fit["steps"] < min(MIN_USEFUL_STEPS, params.steps):
        raise StopRequested(f"Stopped after {fit['steps']} training steps, before the generator "
                            "had learned anything; nothing was kept.")
    ckpt = checkpoint(net, architecture=architecture,
                      normalization={"kind": "percentile", "low": 0.1, "high": 99.9},
                      provenance={"method": method, "params": dataclasses.asdict(params),
                                  "steps": fit["steps"], "seed": seed})
    if params.save_model:
        fit["model_saved"] = save_model(ckpt, params.save_model)
    info.update(fit, trained_steps=fit["steps"])
    return net, ckpt


# --- the driver ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Training:
    """One method's training, made of its own parts; :func:`run_unpaired` runs it on the loop
    with the generator's moving average."""

    step: Callable[[int], Any]
    """``step(it) -> loss``: the forward pass and the generators' loss of step ``it``, each term
    recorded in the :class:`~.gan_parts.Terms` given to :meth:`UnpairedRun.training`."""
    critics_step: Callable[[int], None]
    """After the generators' update: the discriminators' steps on that step's fakes."""
    optimizer: Any
    """The generators' optimiser."""
    critics: dict
    """name -> :class:`~.gan_parts.Critic`, for the report."""
    keeper: Keeper
    """Which snapshot of the moving average is kept (its score)."""
    preview: Callable[[int], Any]
    """``preview(it)``: an image or a dict of them."""
    nets: Sequence[Any]
    """The modules put in training mode before the loop."""
    extra: Callable[[], dict] | None = None
    """Statistics added to each report."""
    results: Callable[[Any], dict] | None = None
    """``results(kept) -> dict``: statistics of the network kept, for the provenance."""
    lr_factor: Callable[[int], float] | None = None
    """The learning rates' schedule (generators and critics alike), e.g.
    :func:`~.train.linear_decay`; ``None``: constant."""


class UnpairedRun:
    """One run of an unpaired method: the parts that are its own. Subclasses set the class
    attributes and implement :meth:`generator`, :meth:`training` and :meth:`write`; the other
    hooks have defaults.

    Parameters
    ----------
    planes : Planes
        The normalised input planes.
    params : UnpairedParams
    ctx : RunContext
    out : Outputs
        The named per-plane outputs.
    clean : optional
        The ``clean=`` examples.
    """

    name = ""
    """The method's registry name (provenance, checkpoints)."""
    architecture = "resnet-generator"
    """The architecture of the checkpoint saved."""
    verb = "restoring"
    """Progress message while predicting."""
    multiple = 1
    """Prediction tiles are padded to a multiple of this."""

    def __init__(self, planes, params, ctx, out, clean=None):

        self.planes, self.params, self.ctx, self.out, self.clean = planes, params, ctx, out, clean
        self.device = ctx.torch_device
        self.zoom = 1
        """Output pixels per input pixel along Y and X."""
        self.sources = planes
        """What the generator restores, plane by plane."""
        self.info: dict = {"device": str(self.device), "trained_steps": 0, "stopped": False}
        """The run's statistics (provenance)."""

    @property
    def title(self) -> str:
        """The method's name in messages (``Params.method_title``)."""
        return self.params.method_title

    def generator(self):
        """A new restoring network (built under the run's seed)."""
        raise NotImplementedError

    def check_saved(self, ckpt: dict) -> None:
        """Refuse a saved model (``model=``) that this method cannot use."""

    def data(self, rng) -> tuple:
        """``(degraded sampler, clean sampler, preview crop)``: see :func:`unpaired_data`."""
        return unpaired_data(self.planes, self.clean, patch=self.params.patch_size,
                             device=self.device, rng=rng, title=self.title)

    def training(self, net, average, degraded, examples, rng, terms: Terms,
                 preview_crop: np.ndarray) -> Training:
        """The method's training: its other networks and critics, its optimiser, the loss terms
        of one step and the keeper of the checkpoint.

        Parameters
        ----------
        net : torch.nn.Module
            The restoring network (new or loaded), trained in place.
        average : torch.nn.Module
            Its moving average: what is previewed, scored and kept.
        degraded, examples : PatchSampler
            Crops of the input and of the clean examples (see :meth:`data`).
        rng : numpy.random.Generator
            The run's generator: it draws the crops and the discriminators' pools.
        terms : Terms
            Records each loss term of a step for the report.
        preview_crop : ndarray, shape (H, W, C)
            The input crop that previews show.
        """
        raise NotImplementedError

    def discriminator(self, crop: int, scales: int = 1):
        """A new PatchGAN discriminator for ``crop``-pixel crops at ``scales`` resolutions, with
        this run's ``disc_features`` and ``spectral_norm`` (build it under a seed)."""
        from ..nets.gan import MultiScaleDiscriminator

        return MultiScaleDiscriminator(self.planes.c, self.params.disc_features,
                                       patch_layers(crop), scales,
                                       spectral=self.params.spectral_norm)

    def critic(self, net, rng) -> Critic:
        """The discriminator ``net`` on the device, with its optimiser (Adam at the run's
        ``learning_rate``) and its pool of fakes (drawing from ``rng``)."""
        return Critic(net.to(self.device), lr=self.params.learning_rate, rng=rng)

    def predictor(self, net):
        """The batched, tiled predictor of the restoring network."""
        from .predict import Predictor

        return Predictor(net, self.device, tile=self.params.tile_size,
                         overlap=self.params.tile_overlap, multiple=self.multiple,
                         scale=self.zoom)

    def read(self, i: int) -> np.ndarray:
        """What the network sees of source plane ``i``: the plane itself by default."""
        return self.sources[i]

    def write(self, i: int, plane: np.ndarray) -> None:
        """Write the restored source plane ``i`` (and its maps) into :attr:`out`."""
        raise NotImplementedError

    def finish(self, done: int) -> int:
        """After prediction (``done`` source planes): the planes of the result written."""
        return done


def run_unpaired(job: UnpairedRun):
    """Generator: train ``job``'s networks (or load its saved generator), then restore every
    plane, streamed; returns the :class:`~napari_ssl_restore.core.registry.MethodResult` with the
    trained ``model`` checkpoint."""
    from ..core.models import build
    from ..core.registry import MethodResult
    from .predict import predict_after_training
    from .train import seeded_init

    params, ctx = job.params, job.ctx
    rng = np.random.default_rng(ctx.seed)
    ckpt = saved_generator(params.model, job.planes.c, job.zoom)
    if ckpt is not None:
        job.check_saved(ckpt)
        net = build(ckpt, job.device)
    else:
        with seeded_init(ctx.seed):
            net = job.generator()
        net = net.to(job.device)
    total, stopped, ckpt_out = 0, False, ckpt
    if params.mode == "train":
        degraded, examples, preview_crop = job.data(rng)
        total = params.steps
        fit = yield from _fit(job, net, degraded, examples, rng, total=total,
                              preview_crop=preview_crop)
        del degraded, examples
        stopped = fit["stopped"]
        net, ckpt_out = keep_trained(fit, job.info, method=job.name,
                                     architecture=job.architecture, params=params,
                                     seed=ctx.seed, resumed=ckpt is not None)
    net.eval()
    done, stopped = yield from predict_after_training(job.predictor(net), job.sources, job.write,
                                                      read=job.read, step0=total,
                                                      stopped=stopped, verb=job.verb)
    job.info.update(planes_done=job.finish(done), stopped=stopped)
    return MethodResult({}, job.info, {"model": ckpt_out})


def _fit(job: UnpairedRun, net, degraded, examples, rng, *, total: int, preview_crop):
    """The training on the engine's loop; returns the network kept and the fit's statistics."""
    from .train import optimise

    params = job.params
    ema = EMA(net, params.ema_decay)
    terms = Terms()
    parts = job.training(net, ema.average, degraded, examples, rng, terms, preview_crop)
    keeper = parts.keeper
    schedule = parts.lr_factor
    critic_lrs = [[g["lr"] for g in c.optimizer.param_groups] for c in parts.critics.values()]

    def after_step(it: int) -> None:
        if schedule is not None:  # the critics follow the generators' schedule
            f = schedule(it)
            for critic, base in zip(parts.critics.values(), critic_lrs, strict=True):
                for group, lr in zip(critic.optimizer.param_groups, base, strict=True):
                    group["lr"] = lr * f
        parts.critics_step(it)
        ema.update()

    describe = reporter(total, terms, parts.critics, extra=parts.extra)
    for module in parts.nets:
        module.train()
    loop = yield from optimise(parts.step, parts.optimizer, total, lr_factor=schedule,
                               after_step=after_step,
                               finished=keeper.check, check_every=params.check_every,
                               describe=describe, preview=parts.preview,
                               preview_every=params.check_every,
                               total=total + len(job.sources))
    if not keeper.diverged:
        keeper.check(loop.steps)  # score the final weights too
    kept = keeper.restore(job.title)
    result = {"net": kept, "steps": loop.steps, "stopped": loop.stopped, "nan": keeper.diverged,
              "best_step": keeper.best_step}
    if parts.results is not None:
        result.update(parts.results(kept))
    return result
