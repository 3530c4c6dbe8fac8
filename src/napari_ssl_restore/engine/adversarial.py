"""Adversarial training, written once for the physics-based GAN, Cycle-Dehaze and disentangled
deblurring; it runs on the engine's one loop (:func:`napari_ssl_restore.engine.train.optimise`).

The loop steps the generator(s): a method's ``step(it)`` returns the generator loss (adversarial
term from :func:`generator_loss` plus its own physics/cycle terms). The discriminator steps in the
loop's ``after_step`` through :meth:`Critic.update`, on the fakes of that step (detached, mixed
with older ones by an :class:`ImagePool`), and the generator's exponential moving average
(:class:`EMA`) updates there too. Nothing reads the device inside a step.

Losses: least squares (LSGAN; Mao et al., ICCV 2017), with one-sided label smoothing (real
target 0.9; Salimans et al., NeurIPS 2016), as Cycle-Dehaze and the pytorch-CycleGAN code that
Physics-GAN builds on; discriminator feature matching (pix2pixHD) as the perceptual term that needs
no downloaded weights. The image pool of 50 past fakes is CycleGAN's (Shrivastava et al., CVPR 2017).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal, Sequence

from ..core.params import param

REAL_LABEL = 0.9
"""Target of real examples for the discriminator (one-sided label smoothing)."""


def _outputs(d_out) -> list:
    """A discriminator's output as a list of ``(scores, features)`` (one per scale)."""
    return d_out if isinstance(d_out, list) else [d_out]


def discriminator_loss(real_out, fake_out, real_label: float = REAL_LABEL):
    """LSGAN discriminator loss: real scores towards ``real_label``, fake scores towards 0,
    averaged over scales (each ``(scores, features)`` or a list of them)."""
    reals, fakes = _outputs(real_out), _outputs(fake_out)
    total = 0.0
    for (r, _), (f, _) in zip(reals, fakes):
        total = total + 0.5 * (((r - real_label) ** 2).mean() + (f ** 2).mean())
    return total / len(reals)


def generator_loss(fake_out):
    """LSGAN generator loss: the discriminator's scores of fakes towards 1 (no smoothing)."""
    fakes = _outputs(fake_out)
    total = 0.0
    for f, _ in fakes:
        total = total + ((f - 1.0) ** 2).mean()
    return total / len(fakes)


def feature_matching(real_out, fake_out):
    """L1 between the discriminator's features of real and fake images (pix2pixHD), averaged
    over layers and scales; the real side carries no gradient. Real and fake batches must have the
    same shape (aligned pairs, e.g. a cycle's input and reconstruction)."""
    reals, fakes = _outputs(real_out), _outputs(fake_out)
    total, n = 0.0, 0
    for (_, rf), (_, ff) in zip(reals, fakes):
        for r, f in zip(rf, ff):
            total = total + (f - r.detach()).abs().mean()
            n += 1
    return total / max(n, 1)


class ImagePool:
    """Past fakes shown to the discriminator: each new fake, with probability 1/2, is swapped for
    a stored one once the pool is full, so the discriminator does not chase only the latest
    generator (CycleGAN). Images stay on the device; the choices come from a seeded NumPy
    generator, so drawing them never waits for the device."""

    def __init__(self, size: int = 50, *, rng=None):
        import numpy as np

        self.size = int(size)
        self.images: list = []
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def query(self, fakes):
        import torch

        if self.size <= 0:
            return fakes
        out = []
        swap = self.rng.random(len(fakes)) < 0.5
        picks = self.rng.integers(self.size, size=len(fakes))
        for img, s, k in zip(fakes.detach(), swap, picks):
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif s:
                out.append(self.images[k])
                self.images[k] = img.clone()
            else:
                out.append(img)
        return torch.cat(out)


class EMA:
    """An exponential moving average of a model's weights (for inference: steadier than the last
    iterate of a GAN). ``average`` is a separate copy, updated in place on the device. The decay
    warms up as ``min(decay, (1 + t) / (10 + t))`` after ``t`` updates, so a short run is not
    dominated by the initial weights."""

    def __init__(self, model, decay: float = 0.999):
        import torch

        self.decay = float(decay)
        self.updates = 0
        self.model = model
        self.average = copy.deepcopy(model).eval()
        for p in self.average.parameters():
            p.requires_grad_(False)
        self._torch = torch

    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with self._torch.no_grad():
            for a, p in zip(self.average.parameters(), self.model.parameters()):
                a.lerp_(p.detach(), 1.0 - decay)
            for a, b in zip(self.average.buffers(), self.model.buffers()):
                a.copy_(b)


class Critic:
    """A discriminator, its optimiser and its pool: :meth:`update` takes one discriminator step on
    real examples against (pooled) fakes. Call it from the training loop's ``after_step``."""

    def __init__(self, net, lr: float = 2e-4, betas: Sequence[float] = (0.5, 0.999), *,
                 pool: int = 50, rng=None, real_label: float = REAL_LABEL):
        import torch

        self.net = net
        self.optimizer = torch.optim.Adam(net.parameters(), lr=lr, betas=tuple(betas))
        self.pool = ImagePool(pool, rng=rng)
        self.real_label = real_label
        self.last_loss = None
        """The last step's loss, a device tensor (read it only when reporting)."""

    def requires_grad(self, flag: bool) -> None:
        for p in self.net.parameters():
            p.requires_grad_(flag)

    def judge(self, images) -> Any:
        """The discriminator's output for ``images`` (with gradients to the images, not to the
        discriminator's weights: for the generator's loss)."""
        self.requires_grad(False)
        try:
            return self.net(images)
        finally:
            self.requires_grad(True)

    def update(self, real, fake) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = discriminator_loss(self.net(real), self.net(self.pool.query(fake.detach())),
                                  self.real_label)
        loss.backward()
        self.optimizer.step()
        self.last_loss = loss.detach()


# --- the settings the adversarial methods share ----------------------------------------------------

TRAIN = {"mode": ("train",)}
"""``when=`` of the settings used only while training."""

_ADV = {"when": TRAIN, "advanced": True}


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
    model: str = param("", "A saved model (.pt) to apply, or to start training from.",
                       widget="open_file")
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


# --- what the adversarial methods share around the loop --------------------------------------------

MIN_USEFUL_STEPS = 50
"""A Stop before this many training steps keeps nothing (the generator has not learned yet)."""


def patch_layers(crop: int) -> int:
    """PatchGAN strided layers for ``crop``-pixel crops: 3 (70×70 patches) from 64², fewer on
    smaller crops so that the last feature map keeps more than one pixel."""
    import numpy as np

    return int(np.clip(np.floor(np.log2(crop / 8)), 1, 3))


def example_stack(clean, channels: int, need: int):
    """The clean examples (a list of arrays: images or stacks, any sizes) as ``(K, H, W, C)``
    float32, normalised together (percentiles 0.1/99.9 of all of them); examples of different
    sizes are centre-cropped to the smallest, which must be at least ``need`` on a side."""
    import numpy as np

    from ..core.normalize import percentile_scaling

    planes = []
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
    import numpy as np

    from ..engine.predict import centre_crop
    from ..engine.train import TRAIN_BYTES, PatchSampler, planes_within, spread, to_device

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
    import dataclasses

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


def reporter(total: int, terms, critics: dict, extra=None):
    """The training loop's ``describe``: every loss term, each critic's last loss (``critics``:
    name -> :class:`Critic`) and ``extra()``'s statistics, read from the device only here."""
    import math

    def describe(it: int, loss: float):
        values = {f"loss_{k}": v for k, v in terms.read().items()}
        values.update({f"D_{k}": float(c.last_loss) if c.last_loss is not None else math.nan
                       for k, c in critics.items()})
        values.update(extra() if extra is not None else {})
        parts = ", ".join(f"{k.removeprefix('loss_')} {v:.3e}" for k, v in values.items())
        return f"training step {it}/{total}: {parts}", {"loss": loss, "step": it, **values}

    return describe


class Terms:
    """The named loss terms of the latest step, kept on the device (read only at reports)."""

    def __init__(self):
        self.values: dict = {}

    def __call__(self, name: str, value, weight: float = 1.0):
        """Record ``value`` under ``name``; returns ``weight * value`` for the total."""
        self.values[name] = value.detach()
        return weight * value

    def read(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.values.items()}


class Keeper:
    """Snapshots of an averaged generator at the loop's checks: the one with the lowest
    ``score(model)`` (e.g. a physics residual on fixed crops), or without a score the latest; a
    non-finite score or weight marks the run as diverged (the loop should stop) and the last good
    snapshot stays."""

    def __init__(self, model, score=None):
        self.model = model
        self.score = score
        self.best = float("inf")
        self.best_step = 0
        self.weights = None
        self.diverged = False
        self.last = float("nan")

    def check(self, it: int) -> bool:
        """Take a snapshot if it is the best so far; ``True`` when training diverged."""
        import math

        import torch

        with torch.inference_mode():
            if self.score is not None:
                value = float(self.score(self.model))
            else:
                finite = torch.stack([p.isfinite().all() for p in self.model.parameters()]).all()
                value = -float(it) if bool(finite) else float("nan")
        self.last = value
        if not math.isfinite(value):
            self.diverged = True
            return True
        if value < self.best:
            self.best, self.best_step = value, it
            self.weights = copy.deepcopy(self.model.state_dict())
        return False

    def restore(self, what: str):
        """Load the kept snapshot into the model (and return it); an error if there is none."""
        import logging

        if self.weights is None:
            raise ValueError(f"{what}: the training loss became NaN before a usable checkpoint; "
                             "lower learning_rate and try again.")
        self.model.load_state_dict(self.weights)
        if self.diverged:
            logging.getLogger(__name__).warning("%s: training diverged (NaN); kept the checkpoint "
                                                "of step %d", what, self.best_step)
        return self.model


def perceptual_features(device, layers=(2, 4, 8)):
    """A frozen feature extractor the project ships: the activations after convolutions
    ``layers`` (1-based) of the shipped blind denoiser (DnCNN, trained on natural and synthetic
    images; receptive fields 5, 9 and 17 pixels) — where the papers used ImageNet VGG features,
    which cannot be downloaded here. Multi-channel images are passed channel by channel. Returns
    ``features(x) -> list of tensors``."""
    import torch

    from ..core.models import build, shipped_model

    net = build(shipped_model(), device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    body = net.body
    relus = [k for k, m in enumerate(body) if isinstance(m, torch.nn.ReLU)]
    cut = [relus[min(n, len(relus)) - 1] for n in layers]

    def features(x):
        h = x.reshape(-1, 1, *x.shape[-2:])
        out = []
        for k, module in enumerate(body[: cut[-1] + 1]):
            h = module(h) if not isinstance(module, torch.nn.ReLU) else torch.relu(h)
            if k in cut:
                out.append(h)
        return out

    return features


def perceptual_loss(features, a, b):
    """Mean squared difference of ``features`` of ``a`` and ``b``, averaged over layers."""
    total = 0.0
    fa, fb = features(a), features(b)
    for x, y in zip(fa, fb):
        total = total + ((x - y) ** 2).mean()
    return total / len(fa)
