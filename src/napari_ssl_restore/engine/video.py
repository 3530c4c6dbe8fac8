"""What the pretrained-denoiser methods share: the denoiser (shipped or saved), its settings, and the
two ways of fine-tuning it on a time-lapse — online, sweeping T, and offline — on the engine's
training loop and batched predictor. ``dncnn`` applies the denoiser; Frame2Frame and
Restore-from-Restored declare only their training pairs and loss (flow and occlusion masks; the
noise model); both restore through the same motion-compensated temporal fusion (:class:`Fusion`).

A time-lapse arrives as canonical planes ``T[Z]YXC``: frame ``t`` at depth ``p`` is plane
``t * Z + p`` (:meth:`Planes.frame_index`), every Z plane being its own movie and all of them
sharing one network. Frames are restored in ``T``-major order, so "frames done" is a prefix of the
output, and streamed: memory is bounded by the frames a step needs and the training frames (spread
over the movie within :data:`napari_ssl_restore.engine.train.TRAIN_BYTES`), not by ``T``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from ..core.params import param
from ..core.progress import Step, StopRequested, unrestored
from .planes import Outputs, Planes
from .predict import Predictor, predict_into, predict_planes
from .train import optimise

logger = logging.getLogger(__name__)

ONLINE = {"mode": ("online",)}
OFFLINE = {"mode": ("offline",)}
PREVIEW_BYTES = 256 * 2**20
"""A movie up to this size is previewed whole (frames replaced as they are restored); a larger one
frame by frame."""


# --- the denoiser --------------------------------------------------------------------------------

def wrap_denoiser(net, channels: int):
    """A module running ``net`` on ``channels``-channel images (folding C into the batch for
    single-channel models, padding for U-Nets), differentiable so it can be fine-tuned."""
    import torch

    from ..nets.unet import pad_to_multiple

    class Denoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.fold = net.config["in_channels"] == 1 and channels > 1
            self.multiple = 2 ** net.depth if hasattr(net, "depth") else 1

        def forward(self, x):
            n, c, h, w = x.shape
            if self.fold:
                x = x.reshape(n * c, 1, h, w)
            if self.multiple > 1:
                x, _ = pad_to_multiple(x, self.multiple)
            y = self.net(x)[..., :h, :w]
            return y.reshape(n, c, h, w) if self.fold else y

    return Denoiser()


def load_denoiser(model: str, channels: int, device):
    """The denoiser to start from: a saved model (``model`` path) or the shipped blind DnCNN.

    Returns ``(module, checkpoint)``. Any model the project saves works (a Noise2Noise U-Net, a
    fine-tuned DnCNN); a single-channel model runs channel by channel on multichannel images.
    """
    from ..core.models import build, load_checkpoint, shipped_model

    ckpt = load_checkpoint(model) if model else shipped_model()
    cin = ckpt["config"]["in_channels"]
    if cin not in (1, channels):
        raise ValueError(f"model {model or 'shipped'!r} expects {cin} channel(s) but the image has "
                         f"{channels}; use a single-channel or a {channels}-channel model.")
    net = build(ckpt, device)
    net.eval()
    return wrap_denoiser(net, channels), ckpt


def save_checkpoint(den, base_ckpt: dict, *, method: str, params, seed: int, info: dict) -> dict:
    """A checkpoint of the (fine-tuned) network, recording what it started from."""
    from ..core.models import checkpoint

    start = base_ckpt.get("provenance", {})
    return checkpoint(den.net, architecture=base_ckpt["architecture"],
                      normalization=base_ckpt.get("normalization", {}),
                      provenance={"method": method, "params": dataclasses.asdict(params),
                                  "seed": seed, "started_from": start.get("shipped")
                                  or start.get("method", "a saved model"), **info})


# --- settings shared by the video methods --------------------------------------------------------

TILE_DOC = ("Largest tile side for prediction; 0 = chosen from the device's memory (whole frames "
            "where they fit).")


@dataclasses.dataclass(frozen=True)
class VideoParams:
    """Settings shared by Frame2Frame and Restore-from-Restored."""

    mode: Literal["online", "offline"] = param(
        "offline", "'offline': fine-tune on the whole time-lapse, then restore every frame. "
                   "'online': sweep forward through T, fine-tuning a few steps on each frame and "
                   "restoring it with the model as it is then (frames appear one by one).",
        choices=("online", "offline"))
    model: str = param("", "Denoiser to start from: empty for the shipped blind DnCNN, or a .pt "
                           "saved by this plugin (e.g. a Noise2Noise model).", widget="open_file")
    save_model: str = param("", "Save the fine-tuned model here (.pt) to reuse it with dncnn or "
                                "as a starting point.", widget="save_file")
    patch_size: int = param(128, "Side of the training crops (whole frames when smaller).",
                            min=16, max=4096, advanced=True)
    batch_size: int = param(4, "Crops per fine-tuning step.", min=1, max=256, advanced=True)
    fusion_radius: int = param(
        2, "Temporal fusion: average each restored frame with the restored frames up to this many "
           "before and after it, warped onto it by the optical flow between them; pixels the flow "
           "does not explain (occlusions, mismatches) are left out. 0: off, the method as "
           "published. Online, frames are written this many frames late.", min=0, max=10)
    tile_size: int = param(0, TILE_DOC, min=0, max=8192, advanced=True)
    tile_overlap: int = param(32, "Overlap of prediction tiles, blended smoothly.", min=0,
                              max=1024, advanced=True)

    def _check_video(self, title: str):
        if self.tile_size and self.tile_overlap >= self.tile_size:
            raise ValueError(f"{title}: tile_overlap must be smaller than tile_size.")


# --- a run ---------------------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
    """What every video run starts with."""

    device: Any
    rng: np.random.Generator
    planes: Planes
    den: Any
    base: dict
    predictor: Predictor
    info: dict
    previews: bool = True

    @property
    def n(self) -> int:
        return len(self.planes)

    def label(self, i: int) -> str:
        t, p = divmod(i, self.planes.n_depth)
        return f"frame {t + 1}/{self.planes.n_frames}" + (
            f" plane {p + 1}/{self.planes.n_depth}" if self.planes.n_depth > 1 else "")

    def predict(self, plane: np.ndarray) -> np.ndarray:
        """One ``(H, W, C)`` plane through the current model."""
        return self.predictor(plane[None])[0]


def start(planes: Planes, params, ctx) -> Run:
    """Device, seeded generators, the starting denoiser and its predictor."""

    device = ctx.torch_device
    den, base = load_denoiser(params.model, planes.c, device)
    predictor = Predictor(den, device, tile=params.tile_size, overlap=params.tile_overlap)
    info = {"device": str(device), "mode": params.mode, "frames": planes.n_frames,
            "_t0": time.perf_counter()}
    return Run(device, np.random.default_rng(ctx.seed), planes, den, base, predictor, info,
               ctx.previews)


def finish(run: Run, params, ctx, *, method: str):
    """The result of a video run: timing, the fine-tuned checkpoint (saved when asked)."""
    from ..core.models import save_model
    from ..core.registry import MethodResult

    info = run.info
    info["seconds"] = round(time.perf_counter() - info.pop("_t0"), 3)
    ckpt = save_checkpoint(run.den, run.base, method=method, params=params, seed=ctx.seed,
                           info={"steps": info.get("steps", 0)})
    if params.save_model:
        info["model_saved"] = save_model(ckpt, params.save_model)
    return MethodResult({}, info, {"model": ckpt})


def _partial(done: int, n: int) -> None:
    logger.warning("stopped after %d/%d frame planes: %s returned unrestored "
                   "(full_output=True reports planes_done)", done, n, unrestored(done, n))


class Movie:
    """The preview of a run: the whole movie, frames replaced as they are restored (small movies),
    the frame just restored (large ones), or nothing when nobody shows previews (the CLI)."""

    def __init__(self, planes: Planes, shown: bool):
        self.planes = planes
        self.shown = shown
        nbytes = len(planes) * int(np.prod(planes.hw)) * planes.c * 4
        self.whole = planes.stack() if shown and nbytes <= PREVIEW_BYTES else None

    def show(self, i: int, plane: np.ndarray) -> np.ndarray | None:
        if not self.shown:
            return None
        if self.whole is None:
            return plane
        self.whole[i] = plane
        return self.whole.reshape(self.planes.shape)


FUSE_BYTES = 512 * 2**20
"""Memory the restored frames held for temporal fusion may take; a movie of many Z planes fuses
over fewer neighbours (the radius shrinks to fit, with a log line; provenance records the radius
used)."""


class Fusion:
    """Motion-compensated temporal fusion of restored frames.

    Restored frames arrive in ``T``-major order (:meth:`push`); frame ``t`` is written once the
    frames up to ``t + radius`` at its depth have arrived, as the weighted mean of itself and its
    restored neighbours ``t ± 1 .. radius``, each warped onto it (bicubic, which keeps texture
    that a bilinear warp blurs: with the pretrained model's frames −0.01 to +0.26 dB on the
    benchmark's σ = 25 videos, within ±0.04 dB with photon noise) by the TV-L1 flow between the
    restored frames (:func:`napari_ssl_restore.physics.flow.tvl1`, on the run's device). A
    neighbour's weight at a pixel is 0 where the flow is untrusted — large divergence
    (occlusion), warping error above 0.1, sampled outside the frame (Frame2Frame's thresholds,
    :func:`~napari_ssl_restore.physics.flow.occlusion_mask`) — and otherwise ``exp(-d / σ²)``, with
    ``d`` the mean squared difference of the warped neighbour from the frame over 5×5 pixels and
    ``σ²`` the variance of the noise the method removed from that frame (input − restored):
    aligned neighbours differ by much less than the noise and count fully, misaligned structure
    drops out. Fusion uses the restored frames (not the fused ones), so nothing is averaged twice.

    The residual error of a denoiser is partly independent from frame to frame, so averaging
    aligned restored frames removes more of it: +1.0 to +1.6 dB for Frame2Frame and RfR on the
    benchmark's videos of real images and +1.8 to +2.5 on synthetic cells, at σ = 25 and with
    Poisson-Gaussian noise (``benchmarks/bench_video.py``) — the idea of video BM3D's temporal
    grouping (Dabov, Foi, Egiazarian 2007) applied to a network's outputs. Memory:
    ``2 * radius * Z + 1`` restored planes (within :data:`FUSE_BYTES`).
    """

    warp_error = 0.1
    divergence = 0.75
    dilation = 2
    window = 5

    def __init__(self, planes: Planes, device, radius: int):
        self.planes, self.device, self.depth = planes, device, planes.n_depth
        plane_bytes = int(np.prod(planes.hw)) * (planes.c + 4) * 4  # and its two flows
        fit = max(0, (FUSE_BYTES // plane_bytes - 1) // (2 * self.depth))
        self.radius = min(radius, planes.n_frames - 1, fit)
        if self.radius < min(radius, planes.n_frames - 1):
            logger.warning("temporal fusion over %d frame(s) each side instead of %d: the frames "
                           "of %d Z planes would not fit in %d MiB", self.radius, radius,
                           self.depth, FUSE_BYTES // 2**20)
        self.held: dict[int, Any] = {}  # restored planes on the device, by index
        self.flows: dict[tuple[int, int], object] = {}  # (i, j): flow from plane i to j
        self.last, self.next, self.seconds = -1, 0, 0.0

    def push(self, i: int, plane: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Take restored plane ``i`` (the next in order); return the planes now ready to write."""
        from .train import to_device

        if self.radius == 0:
            self.next = i + 1
            return [(i, plane)]
        self.held[i] = to_device(plane[None], self.device)
        self.last = i
        return self._ready(final=False, fuse=True)

    def flush(self, fuse: bool = True) -> list[tuple[int, np.ndarray]]:
        """The planes still held, fused with the neighbours that arrived (``fuse=False``, after a
        Stop: as restored, at once)."""
        return self._ready(final=True, fuse=fuse)

    def _ready(self, *, final: bool, fuse: bool) -> list[tuple[int, np.ndarray]]:
        ready = []
        while self.next <= self.last:
            t, p = divmod(self.next, self.depth)
            needed = min(t + self.radius, self.planes.n_frames - 1) * self.depth + p
            if needed > self.last and not final:
                break
            i = self.next
            t0 = time.perf_counter()
            plane = self._fuse(i) if fuse else self.held[i]
            ready.append((i, plane[0].permute(1, 2, 0).cpu().numpy()))
            self.seconds += time.perf_counter() - t0
            self.next += 1
            first = self.next - self.radius * self.depth  # what later frames may still need
            for j in [j for j in self.held if j < first]:
                del self.held[j]
            for pair in [pair for pair in self.flows if pair[0] < first]:
                del self.flows[pair]
        return ready

    def _unit_flows(self, pairs) -> None:
        """The flows between consecutive frames ``(i, j)`` not yet known, in one call."""
        import torch

        from ..physics.flow import tvl1_pairs

        missing = [pair for pair in dict.fromkeys(pairs) if pair not in self.flows]
        if not missing:
            return
        flows = tvl1_pairs(torch.cat([self.held[a] for a, _ in missing]).mean(1),
                           torch.cat([self.held[b] for _, b in missing]).mean(1))
        for k, pair in enumerate(missing):
            self.flows[pair] = flows[k:k + 1]

    def _fuse(self, i: int):
        import torch
        import torch.nn.functional as F

        from ..physics.flow import occlusion_mask, warp
        from .train import to_device

        t, z = i // self.depth, self.depth
        chains = []  # the neighbours held, outwards in each direction, consecutive
        for sign in (-1, 1):
            chain = []
            for k in range(1, self.radius + 1):
                j = i + sign * k * z
                if not 0 <= t + sign * k < self.planes.n_frames or j not in self.held:
                    break
                chain.append(j)
            chains.append(chain)
        if not any(chains):
            return self.held[i]
        self._unit_flows([(a, b) for c in chains for a, b in zip([i] + c[:-1], c, strict=False)])
        flows, others = [], []
        for chain in chains:  # t -> t ± k composed of consecutive flows: two new flows a frame
            total, a = None, i
            for j in chain:
                unit = self.flows[(a, j)]
                total = unit if total is None else total + warp(unit, total)[0]
                flows.append(total)
                others.append(self.held[j])
                a = j
        flow, moving, ref = torch.cat(flows), torch.cat(others), self.held[i]
        warped, inside = warp(moving, flow, mode="bicubic")
        trusted = occlusion_mask(flow, warped, ref, inside, divergence=self.divergence,
                                 warp_error=self.warp_error, dilation=self.dilation)
        sigma2 = (to_device(self.planes[i][None], self.device) - ref).var().clamp_min(1e-10)
        d = F.avg_pool2d(((warped - ref) ** 2).mean(1, keepdim=True), self.window, stride=1,
                         padding=self.window // 2, count_include_pad=False)
        weight = trusted * torch.exp(-d / sigma2)
        return (ref + (weight * warped).sum(0, keepdim=True)) / (1 + weight.sum(0, keepdim=True))

    def report(self) -> dict:
        return {"fusion_radius": self.radius, "fusion_seconds": round(self.seconds, 3)}


def write_ready(out: Outputs, ready, movie: Movie | None = None) -> None:
    """Planes ``(index, plane)`` ready from :class:`Fusion` into the output (and the preview)."""
    for j, plane in ready:
        out["image"][j] = plane
        if movie is not None:
            movie.show(j, plane)


def tune(run: Run, opt, sample: Callable[[int], tuple], loss_fn, steps: int, batch_size: int, *,
         step0: int, total: int, label: str, watch: HeldOut | None = None):
    """``steps`` fine-tuning steps on batches from ``sample(batch_size)``: the engine's loop.

    With ``watch`` (:class:`HeldOut`), the loss on held-out pixels is checked every ``watch.every``
    steps; the loop ends early once fine-tuning has made it worse than at the start for
    ``watch.patience`` checks in a row, and ends on the final weights unless they score worse than
    the starting ones, else on the best weights checked (the starting ones included). A generator;
    returns its :class:`~napari_ssl_restore.engine.train.LoopResult` (a Stop keeps the model as it
    is — with ``watch``, unless it scores worse than the start).
    """
    den = run.den
    den.train()

    def step(_it):
        x, *targets = sample(batch_size)
        return loss_fn(den(x), *targets)

    if watch is None:
        return (yield from optimise(step, opt, steps, step0=step0, total=total, label=label))
    watch.check(0)
    loop = yield from optimise(step, opt, steps, step0=step0, total=total, label=label,
                               finished=watch.check, check_every=watch.every)
    if watch.history[-1][0] != loop.steps:  # the final weights are judged too
        watch.check(loop.steps)
    watch.settle()
    den.train()
    return loop


class HeldOut:
    """A guard on fine-tuning, from pixels it never trains on.

    Blocks of ``block``² pixels, a ``fraction`` of them (at least one) drawn at random, are taken
    out of the training mask of every pair (``train_mask``); the loss on them, over ``crops`` fixed
    windows of the pairs centred on held-out blocks, is the held-out loss. The network still sees
    those pixels as *input* but never fits their targets, so the held-out loss measures the
    denoising, not noise learnt by heart. It changes by parts per thousand as a fine-tuning
    improves, so it is used as a guard rather than to pick a step (stopping at its minimum measured
    0.1-0.2 dB worse than running on, on the benchmark videos, and the loss wobbles by about 0.2 %
    from check to check): "worse" means above the starting model's loss by more than
    ``tolerance`` (0.5 %); :meth:`check` (the loop's ``finished``) asks to stop after ``patience``
    worse checks in a row, and :meth:`settle` keeps the final weights unless they are worse, and
    then restores the best checked (the starting ones included).
    """

    def __init__(self, den, fields, loss_fn, rng: np.random.Generator, *, steps: int,
                 patch: int, fraction: float = 0.05, block: int = 16, crops: int = 16,
                 patience: int = 3, tolerance: float = 0.005):
        import torch

        noisy, target, mask = fields
        n, _, h, w = mask.shape
        grid = np.zeros((-(-h // block), -(-w // block)), bool)
        grid.flat[rng.choice(grid.size, max(1, round(fraction * grid.size)), replace=False)] = True
        held = np.kron(grid, np.ones((block, block), np.float32))[:h, :w]
        held = torch.from_numpy(np.ascontiguousarray(held, np.float32)).to(mask.device)
        self.train_mask = mask * (1 - held)
        ph, pw = min(patch, h), min(patch, w)
        pick = rng.integers(n, size=crops)
        by, bx = np.nonzero(grid)  # every window is centred on a held-out block
        k = rng.integers(len(by), size=crops)
        ys = np.clip(by[k] * block + block // 2 - ph // 2, 0, h - ph)
        xs = np.clip(bx[k] * block + block // 2 - pw // 2, 0, w - pw)
        cut = [(int(k), slice(int(y), int(y) + ph), slice(int(x), int(x) + pw))
               for k, y, x in zip(pick, ys, xs, strict=False)]
        self.x = torch.stack([noisy[k, :, a, b] for k, a, b in cut])
        self.y = torch.stack([target[k, :, a, b] for k, a, b in cut])
        self.m = torch.stack([(mask[k] * held)[:, a, b] for k, a, b in cut])
        self.den, self.loss_fn, self.patience, self.tolerance = den, loss_fn, patience, tolerance
        self.every = max(5, steps // 20)
        self.best, self.best_step, self.worse = float("inf"), 0, 0
        self.best_state: dict[str, Any] | None = None
        self.history: list[tuple[int, float]] = []
        self.kept = "final"

    def check(self, it: int) -> bool:
        import torch

        self.den.eval()
        with torch.no_grad():
            loss = float(self.loss_fn(self.den(self.x), self.y, self.m))
        self.den.train()
        self.history.append((it, loss))
        if loss < self.best:
            self.best, self.best_step = loss, it
            self.best_state = {k: v.detach().clone() for k, v in self.den.state_dict().items()}
        self.worse = self.worse + 1 if self._worse(loss) else 0
        return self.worse >= self.patience

    def _worse(self, loss: float) -> bool:
        """Worse than the starting weights by more than the held-out loss's own wobble."""
        return loss > self.history[0][1] * (1 + self.tolerance)

    def settle(self) -> None:
        """Keep the final weights unless they score worse than the start; then the best checked."""
        if self._worse(self.history[-1][1]) and self.best_state is not None:
            self.den.load_state_dict(self.best_state)
            self.kept = f"step {self.best_step}"

    def report(self) -> dict:
        return {"held_out_loss": [[it, round(v, 6)] for it, v in self.history],
                "kept": self.kept, "best_step": self.best_step}
def online(run: Run, out: Outputs, params, *, make_sampler, loss_fn, lr: float,
           steps_per_frame: int):
    """Sweep forward through T: for every frame, ``steps_per_frame`` fine-tuning steps on batches
    from ``make_sampler(i, previous)`` (``None``: no training on that frame; ``previous`` is the
    restored previous frame at the same depth, or ``None``), then restore the frame with the model as
    it is; with ``params.fusion_radius`` a frame is fused and written once its later neighbours are
    restored (:class:`Fusion`). A generator; returns the run's info. A Stop keeps the frames
    restored so far (those awaiting fusion written as restored).
    """
    import torch

    movie = Movie(run.planes, run.previews)
    fusion = Fusion(run.planes, run.device, params.fusion_radius)
    opt = torch.optim.Adam(run.den.parameters(), lr=lr)
    n = run.n
    depth = run.planes.n_depth
    total = n * (steps_per_frame + 1)
    previous: dict[int, np.ndarray] = {}
    steps, loss = 0, float("nan")

    def stopped() -> dict:
        write_ready(out, fusion.flush(fuse=False), movie)
        if fusion.next < n:
            _partial(fusion.next, n)
        return {"stopped": True, "planes_done": fusion.next, "steps": steps, **fusion.report()}

    for i in range(n):
        p = i % depth
        sampler = make_sampler(i, previous.get(p))
        label = run.label(i)
        if sampler is not None:
            loop = yield from tune(run, opt, sampler, loss_fn, steps_per_frame, params.batch_size,
                                   step0=i * (steps_per_frame + 1), total=total,
                                   label=f"{label}: step")
            steps += loop.steps
            loss = loop.loss
            if loop.stopped:
                return stopped()
        restored = run.predict(run.planes[i])
        previous[p] = restored
        write_ready(out, fusion.push(i, restored), movie)
        try:  # the preview shows each frame as restored at once, fused when its turn comes
            yield Step((i + 1) * (steps_per_frame + 1), total, f"{label} restored",
                       movie.show(i, restored), {"frame": i // depth})
        except StopRequested:
            if fusion.next < n:
                return stopped()
    return {"stopped": False, "planes_done": fusion.next, "steps": steps, "final_loss": loss,
            **fusion.report()}


def restore_all(run: Run, out: Outputs, params, *, step0: int, total: int, stoppable: bool):
    """Restore every frame with the final model into ``out["image"]`` (fused with its neighbours
    when ``params.fusion_radius``: :class:`Fusion`), the filling movie as the preview. A
    generator; returns ``(done, stopped)``. With ``stoppable`` a Stop keeps the frames done (those
    awaiting fusion written as restored); without (after a Stop during fine-tuning) every frame is
    restored, progress still shown.
    """
    movie = Movie(run.planes, run.previews)
    fusion = Fusion(run.planes, run.device, params.fusion_radius)

    def restored(i: int, plane: np.ndarray) -> None:
        write_ready(out, fusion.push(i, plane), movie)
        movie.show(i, plane)  # previewed as restored at once, fused when its turn comes

    what = "restoring" if stoppable else "stopped: restoring with the model so far,"
    whole = movie.whole  # the preview's array, written in place as frames are restored
    _, stopped = yield from predict_into(
        run.predictor, lambda i: run.planes[i], run.n, restored, step0=step0, total=total,
        label=what, stoppable=stoppable,
        preview=None if whole is None else lambda: whole.reshape(run.planes.shape))
    write_ready(out, fusion.flush(fuse=not stopped), movie)
    run.info.update(fusion.report())
    if stopped and fusion.next < run.n:
        _partial(fusion.next, run.n)
    return fusion.next, stopped


def predict_some(run: Run, indices, *, step0: int, total: int, label: str, stoppable: bool):
    """The current model's output for the planes ``indices`` (a bounded set: training frames), as a
    dict. A generator; returns ``(outputs, stopped)``; a Stop is honoured only when ``stoppable``."""
    results: dict[int, np.ndarray] = {}

    def write(i: int, plane: np.ndarray) -> None:
        results[i] = plane

    steps = predict_planes(run.predictor, lambda i: run.planes[i], indices, write,
                           step0=step0, total=total, label=label)
    for step in steps:
        try:
            yield step
        except StopRequested:
            if stoppable:
                steps.close()
                return results, True
    return results, False


def demo_samples() -> list[dict]:
    """The demo of the fine-tuning video methods: a short Poisson-Gaussian time-lapse, offline."""
    from ..data import noisy_video

    s = noisy_video(n_frames=6, size=128, sigma=25 / 255, poisson=30.0)
    return [{**s, "params": {"mode": "offline", "epochs": 5}}]
