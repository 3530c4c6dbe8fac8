"""The network-as-prior machinery (Deep Image Prior and what builds on it), written once.

A randomly initialised generator ``f`` fed a fixed random code ``z`` and fitted to one degraded image
reproduces structure long before noise (Ulyanov et al. 2018). :func:`fit` fits one or several such
generators at once — DIP fits one, Double-DIP three coupled ones — on the engine's training loop,
with the paper's practicalities: fresh noise on the code every step (``reg_noise_std``), an
exponential moving average of the outputs (``output_averaging``, +~1 dB), and early stopping
without ground truth from the running variance of recent outputs (after ES-WMV/ES-EMV, Wang et al.
2021: the variance reaches its minimum near peak quality).

Early stopping runs on the device: the running variance, the best estimate and the iteration at
which it was seen are updated without reading the device back; once ``es_patience`` iterations
pass without a new minimum the best estimate is frozen, and the loop, which asks every 25
iterations, ends. The result is the estimate at the variance minimum, as if checked every step.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

from ..core.params import param
from .train import optimise, seeded_init


@dataclasses.dataclass(frozen=True)
class FitParams:
    """Settings of the DIP optimisation and generator, shared by every DIP-based method."""

    early_stop: bool = param(True, "Stop automatically near peak quality (running variance of the "
                                   "outputs, no ground truth needed) and return the best estimate.")
    es_window: int = param(100, "Early stopping: number of recent iterations the running variance "
                                "averages over (ES-WMV: 100).", min=2, max=10_000, advanced=True)
    es_patience: int = param(500, "Early stopping: stop once the variance has not reached a new "
                                  "minimum for this many iterations.", min=1, max=100_000, advanced=True)
    learning_rate: float = param(0.01, "Adam learning rate (paper: 0.01).", min=1e-6, max=1.0,
                                 step=0.001, advanced=True)
    reg_noise_std: float = param(1 / 30, "Std of the fresh noise added to the network input at "
                                         "every iteration (paper: 1/30 denoising, 0.03 otherwise); "
                                         "0 = off.", min=0.0, max=1.0, step=0.005, advanced=True)
    output_averaging: float = param(0.99, "Exponential moving average of the outputs (paper: "
                                          "0.99, worth ~1 dB); 0 = return the raw output.",
                                    min=0.0, max=0.9999, step=0.01, advanced=True)
    input_depth: int = param(32, "Channels of the random input code z (paper: 32).", min=1, max=512,
                             advanced=True)
    channels: int = param(128, "Feature channels at every scale (paper: 128). 64 is ~4x faster "
                               "on a CPU at some cost in quality.", min=4, max=512, advanced=True)
    depth: int = param(5, "Number of scales of the hourglass (paper: 5).", min=1, max=8,
                       advanced=True)
    skip_channels: int = param(4, "Channels of each skip connection (paper: 4).", min=0, max=256,
                               advanced=True)
    upsample_mode: Literal["bilinear", "nearest"] = param(
        "bilinear", "Upsampling in the decoder (paper: bilinear).", choices=("bilinear", "nearest"),
        advanced=True)
    warm_start: bool = param(False, "Stacks: start each plane from the previous plane's networks "
                                    "and fit it for warm_iter_fraction of max_iter (about 3x "
                                    "faster, for quick looks: measured ~3 dB worse on a noisy test "
                                    "stack, see docs/benchmarks). Off: a fresh fit of max_iter "
                                    "per plane.")
    warm_iter_fraction: float = param(0.25, "Stacks: planes after the first start from the previous "
                                            "plane's networks and run this fraction of max_iter "
                                            "(1 = a full fit per plane).",
                                      min=0.01, max=1.0, step=0.05, advanced=True)
    preview_every: int = param(50, "Iterations between preview updates in napari.", min=1,
                               max=100_000, advanced=True)
    mixed_precision: bool = param(True, "Use bfloat16 autocast on CUDA (ignored on the CPU).",
                                  advanced=True)

    def iterations(self) -> int:
        """The first plane's iteration count; each method's Params defines it."""
        raise NotImplementedError(f"{type(self).__name__} must define iterations()")

    def width(self) -> int:
        """The generator's feature channels (``channels``; a method may choose them per task)."""
        return self.channels

    def plane_iterations(self, n: int) -> list[int]:
        """Iterations for each of ``n`` planes: the first gets ``iterations()``, warm-started ones
        ``warm_iter_fraction`` of it."""
        first = self.iterations()
        later = max(1, round(first * self.warm_iter_fraction)) if self.warm_start else first
        return [first] + [later] * (n - 1)


def per_row(flags, like):
    """Per-plane ``flags`` ``(N,)`` shaped to broadcast over ``like`` ``(N, ...)``."""
    return flags.view((-1,) + (1,) * (like.dim() - 1))


class EarlyStop:
    """Running-variance early stopping on the device (after ES-EMV, Wang et al. 2021).

    An exponentially weighted mean and variance of the recent outputs (constant memory): the
    variance falls while the network fits structure and rises once it fits noise. The estimate at
    the variance minimum is kept; ``patience`` iterations without a new minimum freeze it. Each row
    of the outputs (each plane of a batch fitted together) has its own statistics, minimum and
    freeze; the estimates' rows follow their plane's.
    """

    def __init__(self, window: int, patience: int):
        self.alpha = 2.0 / (window + 1)
        self.window = window
        self.patience = patience
        self.mean = None
        self.best: dict | None = None

    def update(self, it: int, output, estimate: dict) -> None:
        """Feed iteration ``it``'s raw ``output`` (rows = planes); ``estimate`` is what to keep for
        the planes at a new minimum."""
        import torch

        output = output.detach()
        if self.mean is None:
            dev, n = output.device, output.shape[0]
            self.mean = output.clone()
            self.var = torch.zeros(n, device=dev)
            self.best_var = torch.full((n,), float("inf"), device=dev)
            self.best_iter = torch.full((n,), -1, dtype=torch.long, device=dev)
            self.stop_iter = torch.full((n,), -1, dtype=torch.long, device=dev)
            self.frozen = torch.zeros(n, dtype=torch.bool, device=dev)
            self.best = {k: v.detach().clone() for k, v in estimate.items()}
            return
        delta = output - self.mean
        self.mean.add_(delta, alpha=self.alpha)
        self.var = (1 - self.alpha) * (self.var + self.alpha * delta.pow(2).flatten(1).mean(1))
        if it < self.window:
            return
        better = (self.var < self.best_var) & ~self.frozen
        self.best_var = torch.where(better, self.var, self.best_var)
        self.best_iter = torch.where(better, torch.full_like(self.best_iter, it), self.best_iter)
        for k, v in estimate.items():
            self.best[k].copy_(torch.where(per_row(better, v), v.detach(), self.best[k]))
        now = (self.best_iter >= 0) & (it - self.best_iter > self.patience) & ~self.frozen
        self.stop_iter = torch.where(now, torch.full_like(self.stop_iter, it), self.stop_iter)
        self.frozen = self.frozen | now

    def settle(self, it: int, done, estimate: dict) -> None:
        """Freeze the rows ``done`` (a bool tensor, rows = planes) now, keeping ``estimate``'s rows
        as their result: a stopping rule other than the variance's (the discrepancy principle)
        has ended them. Rows already frozen keep theirs."""
        import torch

        if self.mean is None:
            return
        now = done & ~self.frozen
        for k, v in estimate.items():
            self.best[k].copy_(torch.where(per_row(now, v), v.detach(), self.best[k]))
        at = torch.full_like(self.best_iter, it)
        self.best_iter = torch.where(now, at, self.best_iter)
        self.stop_iter = torch.where(now, at, self.stop_iter)
        self.frozen = self.frozen | now

    def found_each(self) -> list[bool]:
        """Whether each plane has a best estimate (reads the device)."""
        if self.mean is None:
            return []
        return [bool(b) for b in (self.best_iter >= 0).tolist()]

    @property
    def found(self) -> bool:
        """Whether every plane has a best estimate (reads the device)."""
        each = self.found_each()
        return bool(each) and all(each)

    def finished(self) -> bool:
        """Whether every plane is frozen (reads the device)."""
        return self.mean is not None and bool(self.frozen.all())


def make_nets(params: FitParams, out_channels, device, *, seed: int, sigmoid: bool = True):
    """Skip/hourglass generators, one per entry of ``out_channels``, initialised reproducibly from
    ``seed`` (one after the other, from one seeded generator)."""
    import torch

    from ..nets.skip import SkipNet

    with seeded_init(seed):
        nets = [SkipNet(params.input_depth, k, params.width(), params.depth,
                        params.skip_channels, params.upsample_mode, sigmoid=sigmoid)
                for k in out_channels]
    nets = [net.to(device) for net in nets]
    if device.type == "cuda":
        nets = [net.to(memory_format=torch.channels_last) for net in nets]
    return nets


def make_net(params: FitParams, out_channels: int, device, *, seed: int, sigmoid: bool = True):
    """One generator (see :func:`make_nets`)."""
    return make_nets(params, [out_channels], device, seed=seed, sigmoid=sigmoid)[0]


PLANE_BATCH_MAX = 32
"""The most planes fitted together automatically (a cap, not yet tuned on a GPU)."""
ACTIVATION_COPIES = 24
"""The memory a skip-network fit holds per plane, counted in full-resolution float32 feature maps
of ``channels`` channels: the autograd graph saves ~16.5 of them (counted with saved-tensor hooks at
64²-256², 5 scales), the gradients and temporaries the rest."""


def plane_batch(requested: int, n: int, c: int, hw: tuple[int, int], channels: int, device) -> int:
    """How many of ``n`` planes to fit at once.

    ``requested`` > 0 is taken as given. Automatic (0): on CUDA, as many as fit in half the free
    device memory (an out-of-memory error halves it again, see ``dip.run``), at most
    :data:`PLANE_BATCH_MAX`; elsewhere 1, because on a CPU the batched step (grouped convolutions)
    was measured slower per plane than fitting the planes one by one (see docs/benchmarks/dip.md).
    """
    import torch

    if requested:
        return max(1, min(requested, n))
    device = torch.device(device)
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_plane = ACTIVATION_COPIES * max(channels, c) * hw[0] * hw[1] * 4
    return int(max(1, min(n, PLANE_BATCH_MAX, (free // 2) // max(per_plane, 1))))


def make_code(params: FitParams, shape: tuple[int, int], generator, device):
    """The fixed random input ``z``: uniform noise scaled by 0.1, as in the paper."""
    import torch

    z = torch.rand((1, params.input_depth) + tuple(shape), generator=generator, device=device) * 0.1
    return z.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else z


def fit(nets, codes, render, objective, params: FitParams, iterations: int, *, generator,
        step0: int, total: int, label: str, watch: str, extra_parameters=(), preview_keys=(),
        discrepancy=None):
    """Fit one or several generators; a generator of Steps on the engine's training loop.

    Each iteration feeds every ``nets[k]`` its code ``codes[k]`` (plus fresh ``reg_noise_std``
    noise), ``render`` turns their outputs into named tensors, ``objective`` turns those into the
    loss, and Adam updates the networks (and ``extra_parameters``). Every rendered tensor is averaged
    over iterations (``output_averaging``); early stopping watches ``rendered[watch]``. Previews show
    ``rendered[watch]``, or a dict of the ``preview_keys`` tensors when given.

    Several planes fitted together (a :class:`~napari_ssl_restore.nets.stack.StackedNets` per
    generator, codes of ``B`` rows, ``objective`` the sum of the per-plane losses) pass one noise
    ``generator`` per plane, so each plane draws the noise it would draw alone; early stopping then
    runs per plane (rows of ``rendered[watch]``) and the loop ends when every plane has stopped.

    ``discrepancy``: ``(residual, level, factor)`` for the discrepancy principle (Morozov): with
    early stopping on, ``residual(estimates)`` (per plane, of the averaged estimates) is compared
    with ``level`` (per plane: the noise variance) at every check; a plane whose residual fell to
    its level at iteration ``t`` is stopped at iteration ``factor · t`` with its estimate then. The
    variance rule is then not used (deconvolution: the variance was still falling where quality
    peaked, docs/benchmarks).

    Returns ``(estimates, info)``: the averaged tensors (each plane's at its variance minimum with
    early stopping), and ``{"stop_iteration", "best_iteration", "stopped", "final_loss",
    "meaningful"}`` (the first plane's; ``meaningful``: every plane has an estimate worth keeping)
    with per-plane lists ``"stop_iterations"``, ``"best_iterations"``, ``"meaningful_each"``. A Stop
    ends the fit and returns the best estimates so far.
    """
    import torch

    device = codes[0].device
    amp = params.mixed_precision and device.type == "cuda"
    trainable = [p for net in nets for p in net.parameters()] + list(extra_parameters)
    opt = torch.optim.Adam(trainable, lr=params.learning_rate, fused=device.type == "cuda")
    # with the discrepancy rule, the variance rule only tracks its best estimate (never stops)
    patience = params.es_patience if discrepancy is None else 1 << 62
    es = EarlyStop(params.es_window, patience) if params.early_stop else None
    state: dict = {"avg": None, "rendered": None}
    gens = list(generator) if isinstance(generator, (list, tuple)) else [generator]

    def noise(z):
        if len(gens) == 1:
            return torch.randn(z.shape, generator=gens[0], device=device, dtype=z.dtype)
        return torch.cat([torch.randn((1,) + tuple(z.shape[1:]), generator=g, device=device,
                                      dtype=z.dtype) for g in gens])

    def step(it):
        outs = []
        for net, z in zip(nets, codes, strict=True):
            if params.reg_noise_std > 0:
                z = z + params.reg_noise_std * noise(z)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                outs.append(net(z).float())
        state["rendered"] = render(outs)
        return objective(state["rendered"])

    def after(it):
        with torch.no_grad():
            rendered, avg = state["rendered"], state["avg"]
            if avg is None or params.output_averaging == 0:
                state["avg"] = {k: v.detach().clone() for k, v in rendered.items()}
            else:
                for k, v in rendered.items():
                    avg[k].mul_(params.output_averaging).add_(v.detach(),
                                                              alpha=1 - params.output_averaging)
            if es is not None:
                es.update(it, rendered[watch], state["avg"])
        state["rendered"] = None

    def describe(it, loss):
        best = ""
        if es is not None and es.mean is not None:
            if len(es.best_iter) == 1:
                best = f", best@{int(es.best_iter[0])}" if es.found else ""
            else:
                best = f", {int(es.frozen.sum())}/{len(es.frozen)} planes stopped"
        metrics = {"loss": loss, "iteration": it,
                   "es_variance": float(es.var.mean()) if es is not None and es.mean is not None
                   else float("nan")}
        return f"{label} iter {it}/{iterations}, loss {loss:.3e}{best}".strip(), metrics

    def show(t):
        return t[0].permute(1, 2, 0).float().cpu().numpy()

    def preview(it):
        avg = state["avg"]
        return {k: show(avg[k]) for k in preview_keys} if preview_keys else show(avg[watch])

    loop = yield from optimise(step, opt, iterations, after_step=after,
                               finished=_finisher(es, discrepancy, params.es_window, state),
                               describe=describe, preview=preview,
                               preview_every=params.preview_every, step0=step0, total=total)
    found, best, stops = _stop_points(es, loop.steps, codes[0].shape[0], params, iterations)
    estimates = _best_estimates(es, found, state["avg"], device)
    return estimates, {"stop_iteration": stops[0], "best_iteration": best[0],
                       "stopped": loop.stopped, "final_loss": loop.loss,
                       "meaningful": all(found), "stop_iterations": stops,
                       "best_iterations": best, "meaningful_each": found}


def _finisher(es: EarlyStop | None, discrepancy, start: int, state: dict):
    """The loop's ``finished`` test: the variance rule, and the discrepancy rule when given."""
    if es is None:
        return None
    rule = _Discrepancy(discrepancy, start) if discrepancy is not None else None

    def finished(_it: int) -> bool:
        if rule is not None and state["avg"] is not None:
            rule.check(_it, es, state["avg"])
        return es.finished()

    return finished


class _Discrepancy:
    """The discrepancy rule of :func:`fit`: a plane whose averaged estimate's residual fell to its
    level at iteration ``t`` is settled at ``factor · t``."""

    def __init__(self, discrepancy, start: int):
        self.residual, self.level, self.factor = discrepancy
        self.start = start
        self.at = None

    def check(self, it: int, es: EarlyStop, avg: dict) -> None:
        import torch

        if it < self.start:
            return
        with torch.no_grad():
            below = self.residual(avg) <= self.level
            at = self.at if self.at is not None else torch.full(
                below.shape, -1, dtype=torch.long, device=below.device)
            self.at = at = torch.where(below & (at < 0), torch.full_like(at, it), at)
            es.settle(it, (at >= 0) & (it >= torch.ceil(self.factor * at)), avg)


def _stop_points(es: EarlyStop | None, steps: int, rows: int, params: FitParams, iterations: int):
    """Per plane: whether it has an estimate worth keeping, its best and its stop iteration."""
    if es is not None and es.mean is not None:
        found = es.found_each()
        best = [b if f else steps for b, f in zip(es.best_iter.tolist(), found, strict=True)]
        stops = [s if s >= 0 else steps for s in es.stop_iter.tolist()]
    else:
        found = [es is None and steps >= min(params.es_window, iterations)] * rows
        best = stops = [steps] * rows
    return found, best, stops


def _best_estimates(es: EarlyStop | None, found: list[bool], avg: dict, device) -> dict:
    """Each plane's estimate at its variance minimum; planes without one keep the running average."""
    import torch

    best = es.best if es is not None else None
    if best is not None and any(found):
        flags = torch.tensor(found, device=device)
        return {k: torch.where(per_row(flags, v), best[k], v) for k, v in avg.items()}
    return avg


def _gradients(x):
    """The x and y forward differences of ``(..., H, W)``."""
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def exclusion_loss(a, b, levels: int = 3):
    """Gradient exclusion between two layers over an image pyramid (Zhang, Ng & Chen 2018).

    At each level and for x and y gradients: ``|| tanh(λ|∇a|) ⊙ tanh(|∇b|) ||_F`` with
    ``λ = sqrt(mean|∇b| / mean|∇a|)`` balancing the two layers' gradient magnitudes.
    """
    import torch
    import torch.nn.functional as F

    total = a.new_zeros(())
    for level in range(levels):
        for ga, gb in zip(_gradients(a), _gradients(b), strict=True):
            lam = torch.sqrt(gb.abs().mean().detach() / (ga.abs().mean().detach() + 1e-8) + 1e-8)
            prod = torch.tanh(lam * ga.abs()) * torch.tanh(gb.abs())
            total = total + torch.sqrt(torch.mean(prod ** 2) + 1e-12)
        if level < levels - 1 and min(a.shape[-2:]) >= 4:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return total / levels


def too_early(plane_info: dict, params: FitParams) -> str:
    """Why a fit stopped at its first plane has nothing to keep (the Stop's message)."""
    needed = (f"early stopping keeps its first estimate after {params.es_window} iterations"
              if params.early_stop else f"an estimate needs {params.es_window} iterations")
    return (f"Stopped at iteration {plane_info['stop_iteration']}, before a usable estimate "
            f"({needed}); nothing was kept.")
