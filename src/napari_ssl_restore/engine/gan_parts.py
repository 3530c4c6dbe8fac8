"""The moving parts of adversarial training on the engine's one loop
(:func:`napari_ssl_restore.engine.train.optimise`): a discriminator with its optimiser and pool
(:class:`Critic`), the generator's moving average (:class:`EMA`), the snapshot kept
(:class:`Keeper`), the loss terms of a step (:class:`Terms`) and the loop's report (:func:`reporter`).

The loop steps the generator(s): a method's ``step(it)`` returns the generator loss (adversarial
term from :func:`~napari_ssl_restore.engine.gan_losses.generator_loss` plus its own physics/cycle
terms). The discriminator steps in the loop's ``after_step`` through :meth:`Critic.update`, on the
fakes of that step (detached, mixed with older ones by an :class:`ImagePool`), and the generator's
exponential moving average updates there too. Nothing reads the device inside a step.

The image pool of 50 past fakes is CycleGAN's (Shrivastava et al., CVPR 2017).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from .gan_losses import REAL_LABEL, discriminator_loss
from .train import EMA  # noqa: F401  (the generator's moving average; general, lives in train)


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
        for img, s, k in zip(fakes.detach(), swap, picks, strict=False):
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


def patch_layers(crop: int) -> int:
    """PatchGAN strided layers for ``crop``-pixel crops: 3 (70×70 patches) from 64², fewer on
    smaller crops so that the last feature map keeps more than one pixel."""
    import numpy as np

    return int(np.clip(np.floor(np.log2(crop / 8)), 1, 3))


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


def reporter(total: int, terms: Terms, critics: dict, extra=None):
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


def two_domains(clean: tuple[str, Critic], degraded: tuple[str, Critic], state: dict, *,
                adversarial: bool = True):
    """The critics of a two-domain method (Cycle-Dehaze, disentangled deblurring): ``clean``
    judges restored images against the clean examples (left out when the restored side has no
    adversarial term), ``degraded`` judges degraded images made from clean ones against the
    input's crops. A training step leaves its images in ``state`` under ``"clean"``,
    ``"restored"``, ``"degraded"`` and ``"made"``. Returns ``(critics, critics_step)``: the
    ``name -> Critic`` dict for the report and the step that updates them."""
    (clean_name, clean_critic), (degraded_name, degraded_critic) = clean, degraded

    def critics_step(it: int) -> None:
        if adversarial:
            clean_critic.update(state["clean"], state["restored"])
        degraded_critic.update(state["degraded"], state["made"])
        state.clear()

    critics = {clean_name: clean_critic} if adversarial else {}
    return {**critics, degraded_name: degraded_critic}, critics_step
