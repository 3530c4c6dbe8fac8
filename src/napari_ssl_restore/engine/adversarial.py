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
from typing import Any, Sequence

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
