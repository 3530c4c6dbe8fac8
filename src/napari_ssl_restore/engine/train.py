"""The one training loop, its learning-rate schedule and its device-resident patch sampler.

Every trained method — Deep Image Prior and Double-DIP fitting their generators, Noise2Noise,
Frame2Frame and Restore-from-Restored fine-tuning a denoiser, ``scripts/train_denoiser.py`` — steps its
model(s) through :func:`optimise`. A method supplies only what is its own: a ``step(it)`` closure that
computes the loss (network, operator, loss function, its sampler's batch), and optionally what to do
after each step, when it has finished, and what to preview.

The loop never waits for the device inside a step: the loss is accumulated on the device and read
back only when it reports (on the first step, then about every half second: :class:`Ticker`), and a
method's "finished?" test runs every ``check_every`` steps, a fixed count, so results never depend on
timing. A Stop (``StopRequested`` thrown in at a report) ends the loop and keeps the model as it is;
what a stopped run returns is the method's choice.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.progress import Step, StopRequested, Ticker


@dataclasses.dataclass
class LoopResult:
    steps: int
    """Steps done."""
    loss: float
    """The loss at the last report (a running mean over recent steps)."""
    stopped: bool
    """Ended by a Stop."""
    finished: bool = False
    """Ended because the method said it had finished (e.g. early stopping)."""


def cosine_rampdown(total: int, fraction: float = 0.3) -> Callable[[int], float]:
    """Learning-rate factor: 1 for the first ``1 - fraction`` of ``total`` steps, then a cosine
    ramp down to 0 (Noise2Noise's schedule; Lehtinen et al. 2018)."""
    start = (1 - fraction) * total

    def factor(step: int) -> float:
        if step <= start:
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - start) / max(total - start, 1)))

    return factor


def linear_decay(total: int, fraction: float = 0.5) -> Callable[[int], float]:
    """Learning-rate factor: 1 for the first ``1 - fraction`` of ``total`` steps, then a straight
    line down to 0 (CycleGAN's schedule; Zhu et al. 2017): adversarial training settles instead of
    wandering to the last step."""
    start = (1 - fraction) * total

    def factor(step: int) -> float:
        return 1.0 if step <= start else max(0.0, (total - step) / max(total - start, 1))

    return factor


def optimise(step: Callable[[int], Any], optimizer, iterations: int, *,
             lr_factor: Callable[[int], float] | None = None,
             after_step: Callable[[int], None] | None = None,
             finished: Callable[[int], bool] | None = None, check_every: int = 25,
             describe: Callable[[int, float], tuple[str, dict]] | None = None,
             preview: Callable[[int], Any] | None = None, preview_every: int = 0,
             step0: int = 0, total: int | None = None, label: str = "step"):
    """Run ``iterations`` optimisation steps; a generator of :class:`Step` events.

    Parameters
    ----------
    step : callable
        ``step(it) -> loss``: the forward pass and loss of step ``it`` (1-based); the loop does
        ``zero_grad``, ``backward`` and the optimiser step.
    optimizer : torch.optim.Optimizer
    lr_factor : callable, optional
        ``lr_factor(it)`` scales every group's initial learning rate (see :func:`cosine_rampdown`).
    after_step : callable, optional
        Called after each update (averaging, early-stopping statistics), without reading the device.
    finished : callable, optional
        ``finished(it) -> bool``, asked every ``check_every`` steps (it may read the device).
    describe : callable, optional
        ``describe(it, loss) -> (message, metrics)`` for a report.
    preview : callable, optional
        ``preview(it)`` -> a preview image (or dict of them), every ``preview_every`` steps.
    step0, total, label
        Progress offset and total (the loop's place in a longer run), and the message's prefix.

    Returns
    -------
    LoopResult
    """
    import torch

    ticker = Ticker()
    base = [group["lr"] for group in optimizer.param_groups]
    running = None
    it, loss_value, stopped, ended = 0, float("nan"), False, False
    try:
        for it in range(1, iterations + 1):
            if lr_factor is not None:
                f = lr_factor(it)
                for group, lr in zip(optimizer.param_groups, base, strict=False):
                    group["lr"] = lr * f
            optimizer.zero_grad(set_to_none=True)
            loss = step(it)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                value = loss.detach().float()
                running = value.clone() if running is None else running.mul_(0.9).add_(value,
                                                                                     alpha=0.1)
            if after_step is not None:
                after_step(it)
            ended = finished is not None and it % check_every == 0 and finished(it)
            preview_due = bool(preview_every) and it % preview_every == 0
            if ticker.due() or preview_due or it == iterations or ended:
                loss_value = float(running)  # the loop's only read-back, at reports
                if describe is not None:
                    message, metrics = describe(it, loss_value)
                else:
                    message = f"{label} {it}/{iterations}, loss {loss_value:.3e}"
                    metrics = {"loss": loss_value, "step": it}
                yield Step(step0 + it, total if total is not None else step0 + iterations,
                           message, preview(it) if preview_due and preview is not None else None,
                           metrics)
            if ended:
                break
    except StopRequested:
        stopped = True
    if running is not None and not stopped:
        loss_value = float(running)
    return LoopResult(steps=it, loss=loss_value, stopped=stopped, finished=ended)


class EMA:
    """An exponential moving average of a model's weights (for inference: steadier than the last
    iterate, of a GAN or of a constant-learning-rate run). ``average`` is a separate copy, updated
    in place on the device (no host sync). The decay warms up as ``min(decay, (1 + t) / (10 + t))``
    after ``t`` updates, so a short run is not dominated by the initial weights: a plain 0.995
    average of a Noise2Noise U-Net still lags the network by ~3 dB after 1000 steps, the warmed-up
    one by none (``benchmarks/bench_n2n.py``)."""

    def __init__(self, model, decay: float = 0.999):
        import torch

        self.decay = float(decay)
        self.updates = 0
        self.model = model
        self.average = copy.deepcopy(model).eval()
        for p in self.average.parameters():
            p.requires_grad_(False)
        self._averaged = list(self.average.parameters())
        self._weights = list(model.parameters())
        self._torch = torch

    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with self._torch.no_grad():
            self._torch._foreach_lerp_(self._averaged, self._weights, 1.0 - decay)
            for a, b in zip(self.average.buffers(), self.model.buffers(), strict=True):
                a.copy_(b)


class PatchSampler:
    """Random aligned crops of device-resident planes, augmented on the device.

    ``fields`` are ``(P, C_k, H, W)`` tensors on the device; each row of ``rows`` names, for every
    field, the plane a sample takes from it (a Noise2Noise pair reads plane ``i`` of the image and
    plane ``j`` of the same or another field; Frame2Frame reads plane ``k`` of the noisy frames, the
    warped targets and the masks). A batch draws rows and windows with a NumPy generator (no device
    read), crops every field at the same window and applies the same random 90° rotation and flip
    to all of them (``augment``; ``"flips"``: left-right flips only, for data whose operator is
    not rotation-invariant, e.g. an axial slice with Z vertical).
    """

    def __init__(self, fields: Sequence[Any], rows: Sequence[Sequence[int]], patch: int,
                 rng: np.random.Generator, *, augment: bool | str = False):
        if not rows:
            raise ValueError("the sampler needs at least one row of planes to draw from.")
        h, w = fields[0].shape[-2:]
        self.fields = list(fields)
        self.rows = np.asarray(rows, dtype=np.int64).reshape(len(rows), len(self.fields))
        self.ph, self.pw = min(patch, h), min(patch, w)
        self.h, self.w = h, w
        self.rng = rng
        self.augment = augment

    def __call__(self, n: int) -> tuple:
        import torch

        picks = self.rows[self.rng.integers(len(self.rows), size=n)]
        ys = self.rng.integers(0, self.h - self.ph + 1, size=n)
        xs = self.rng.integers(0, self.w - self.pw + 1, size=n)
        square = self.ph == self.pw
        rotate = self.augment is True and square
        rots = self.rng.integers(4, size=n) if rotate else np.zeros(n, int)
        flips = self.rng.integers(2, size=n) if self.augment else np.zeros(n, int)
        batches = []
        for f, field in enumerate(self.fields):
            crops = []
            for b in range(n):
                y, x = int(ys[b]), int(xs[b])
                crop = field[int(picks[b, f]), :, y:y + self.ph, x:x + self.pw]
                if rots[b]:
                    crop = torch.rot90(crop, int(rots[b]), (-2, -1))
                if flips[b]:
                    crop = crop.flip(-1)
                crops.append(crop)
            batches.append(torch.stack(crops))
        return tuple(batches)


def to_device(planes: np.ndarray, device):
    """``(N, H, W, C)`` float planes -> a contiguous ``(N, C, H, W)`` float32 tensor on ``device``."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(planes, dtype=np.float32)).permute(0, 3, 1, 2)
    return t.contiguous().to(device)


TRAIN_BYTES = 512 * 2**20
"""Device/host memory the training planes of one sampler may take; a longer stack trains on
planes spread evenly over it."""


def spread(n: int, k: int) -> list[int]:
    """At most ``k`` of ``range(n)``, spread evenly (all of them when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def planes_within(budget: int, plane_bytes: int, per_row: int = 1) -> int:
    """How many rows of ``per_row`` planes of ``plane_bytes`` fit in ``budget`` (at least 2)."""
    return max(2, budget // max(plane_bytes * per_row, 1))


def seeded_init(seed: int):
    """A context in which ``torch``'s global generator is seeded with ``seed`` and restored after,
    under a lock: networks built inside are initialised reproducibly (PyTorch's own initialisers
    use the global generator) without another run's randomness racing with this one's."""
    import contextlib
    import threading

    import torch

    lock = _INIT_LOCK.setdefault("lock", threading.Lock())

    @contextlib.contextmanager
    def ctx():
        with lock, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield

    return ctx()


_INIT_LOCK: dict = {}
