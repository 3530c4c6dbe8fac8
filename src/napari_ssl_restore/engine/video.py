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
from .fusion import Fusion
from .planes import Outputs, Planes
from .predict import Predictor, centre_crop, predict_into, predict_planes
from .train import optimise

logger = logging.getLogger(__name__)

ONLINE = {"mode": ("online",)}
OFFLINE = {"mode": ("offline",)}
PREVIEW_BYTES = 256 * 2**20
"""A movie up to this size is previewed whole (frames replaced as they are restored); a larger one
frame by frame."""


# --- the denoiser --------------------------------------------------------------------------------

NOISE_CHOICES = ("auto", "gaussian")
NOISE_DOC = ("Noise model for a noise-aware denoiser (the shipped default reads the noise "
             "level at each pixel beside the image): 'auto' measures signal-dependent (photon) "
             "noise a*u + b on the image; 'gaussian' forces one level everywhere (the measured "
             "level at the median intensity). Blind models ignore it.")
NOISE_CROP = 512
"""Side of the centre crop of each sampled plane on which the noise model is measured."""
NOISE_PLANES = 8
"""Planes (spread over the stack) on which the noise model is measured, as the assistant does."""


def wrap_denoiser(net, channels: int, noise=None):
    """A module running ``net`` on ``channels``-channel images (folding C into the batch for
    single-channel models, padding for U-Nets), differentiable so it can be fine-tuned.

    ``noise``: per channel ``(a, b)`` of the noise variance ``a·u + b`` in the images' units, for a
    noise-aware network (``config["noise_map"]``): the module then makes the noise-level map of each
    input itself (:func:`~napari_ssl_restore.physics.noise.noise_std_map`), so the predictor, the
    self-ensemble, tiling and fine-tuning pass images only. Without it such a network expects the
    map as the input's last channel."""
    import torch

    from ..nets.unet import pad_to_multiple
    from ..physics.noise import noise_std_map

    class Denoiser(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.fold = net.config["in_channels"] == 1 and channels > 1
            self.multiple = 2 ** net.depth if hasattr(net, "depth") else 1
            self.noise = None if noise is None else np.asarray(noise, np.float32).reshape(-1, 2)

        def forward(self, x):
            n, c, h, w = x.shape
            if self.fold:
                x = x.reshape(n * c, 1, h, w)
            if self.noise is not None:  # one model per channel, repeated over the batch
                a = np.tile(self.noise[:, 0], x.shape[0] // len(self.noise)).reshape(-1, 1, 1, 1)
                b = np.tile(self.noise[:, 1], x.shape[0] // len(self.noise)).reshape(-1, 1, 1, 1)
                x = torch.cat([x, noise_std_map(x, a, b)], 1)
            if self.multiple > 1:
                x, _ = pad_to_multiple(x, self.multiple)
            y = self.net(x)[..., :h, :w]
            return y.reshape(n, c, h, w) if self.fold else y

    return Denoiser()


def measure_noise(planes: Planes, noise: str = "auto") -> np.ndarray:
    """Per channel ``(a, b)`` of the noise variance ``a·u + b`` in the planes' normalised units,
    fitted on centre crops of up to :data:`NOISE_PLANES` planes spread over the whole stack (the
    restore assistant's
    fit, :func:`~napari_ssl_restore.physics.estimate.noise_fit`). ``noise="gaussian"``: one
    level per channel, the fitted variance at the median intensity (``a = 0``)."""
    from ..physics.estimate import channel_noise_models, variance_at_median

    if noise not in NOISE_CHOICES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_CHOICES)}; got {noise!r}.")
    whole = planes.whole
    crops = [centre_crop(whole[i], NOISE_CROP) for i in whole.source.sample_indices(NOISE_PLANES)]
    try:
        models = channel_noise_models(crops)
    except ValueError:
        raise ValueError(f"planes of {crops[0].shape[:2]} pixels are too small to measure the "
                         "noise a noise-aware denoiser needs; give planes of at least 10x10 "
                         "pixels, or a blind model (model='dncnn-blind-gray').") from None
    if noise == "gaussian":
        models = np.stack([np.zeros(len(models)), variance_at_median(crops, models)], axis=1)
    return models


def load_denoiser(model: str, planes: Planes, device, noise: str = "auto"):
    """The denoiser to start from: the shipped one, a shipped model by name or a saved model (path).

    Returns ``(module, checkpoint, info)``. Any model the project saves works (a Noise2Noise U-Net,
    a fine-tuned DnCNN); a single-channel model runs channel by channel on multichannel images; a
    noise-aware one reads the noise model :func:`measure_noise` fits on ``planes`` (recorded in
    ``info``).
    """
    from ..core.models import build, model_named

    ckpt = model_named(model)
    cin, channels = ckpt["config"]["in_channels"], planes.c
    if cin not in (1, channels):
        raise ValueError(f"model {model or 'shipped'!r} expects {cin} channel(s) but the image has "
                         f"{channels}; use a single-channel or a {channels}-channel model.")
    info: dict[str, Any] = {}
    models = None
    if ckpt["config"].get("noise_map"):
        if cin != 1:
            raise ValueError(f"model {model!r}: a noise-aware model must be single-channel.")
        models = measure_noise(planes, noise)
        info["noise_model"] = {"noise": noise, "a": [float(m[0]) for m in models],
                               "b": [float(m[1]) for m in models]}
    net = build(ckpt, device)
    net.eval()
    return wrap_denoiser(net, channels, models), ckpt, info


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
    model: str = param("", "Denoiser to start from: empty for the shipped denoiser, a shipped "
                           "model's name (dncnn-blind-gray: the first release's), or a .pt saved "
                           "by this plugin (e.g. a Noise2Noise model).", widget="open_file")
    noise: Literal["auto", "gaussian"] = param("auto", NOISE_DOC, choices=NOISE_CHOICES,
                                               advanced=True)
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
    den, base, noise = load_denoiser(params.model, planes, device, params.noise)
    predictor = Predictor(den, device, tile=params.tile_size, overlap=params.tile_overlap)
    info = {"device": str(device), "mode": params.mode, "frames": planes.n_frames, **noise,
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
