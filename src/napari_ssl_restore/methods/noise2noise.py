"""Noise2Noise (Lehtinen et al., ICML 2018): learn to denoise from pairs of noisy images.

If ``x`` and ``y`` are two independent noisy observations of the same scene with zero-mean noise, a
network trained to map ``x`` to ``y`` with the L2 loss converges to the same function as one trained
on clean targets. In microscopy the pairs come from two acquisitions of the same field (``target=``),
from consecutive frames of a fast time-lapse (structures barely move between frames), or from
adjacent planes of a finely sampled Z-stack. Loss by noise type: L2 (Gaussian, Poisson), L1
(median-type noise: multiplicative Bernoulli, text overlays), annealed L0 (random-valued impulses).

Training samples random patches with random flips and 90° rotations (the same for both images of a
pair), cropped and augmented on the device, in batches of 4 (the authors' released configuration;
twice the updates of batches of 8 in the same time, which a CPU budget needs), with Adam. A strip
along the bottom of every pair (``validation_fraction`` of the rows) is held out: never trained on,
it measures the N2N loss ``E||f(x) - y||²`` on pixels the network has not seen, which differs from
the loss against the clean image only by the noise variance (the noise of ``y`` is independent of
``f(x)``). By default (``steps=0``) training runs at a constant learning rate (1e-3, faster than
the paper's 3e-4: the kept weights guard against the over-fitting that follows) with an exponential
moving average of the weights until that held-out loss of the averaged weights has not improved for
``patience`` steps, then goes back to the best averaged weights, ramps the rate down to 0 over
:data:`RAMP_STEPS` steps from there and stops (at most :data:`MAX_AUTO_STEPS` in all, and the ramp
starts in time to end within :data:`MAX_AUTO_SECONDS` at the measured step rate); the best averaged
weights are kept. A fixed ``steps`` count instead
ramps the learning rate down over the last 30 % of the steps (the paper's schedule) and keeps the
final weights. A long stack trains on pairs spread evenly over it, as many as the training memory
holds. Prediction streams every plane through the engine's batched predictor (overlapping, blended
tiles), so any image size fits in memory. Loop, sampler, schedule and predictor are the engine's
(:mod:`napari_ssl_restore.engine`); this module declares the settings, the pairs and the loss.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Literal

import numpy as np

from ..core.params import param
from ..core.progress import StopRequested
from ..core.registry import ExtraInput, MethodResult, MethodSpec, Output, RunContext
from ..engine.planes import Outputs, Planes
from ._public import public_function

logger = logging.getLogger(__name__)

TRAIN = {"mode": ("train",)}  # parameters only a training run uses
MIN_USEFUL_STEPS = 50
"""A network trained from scratch for fewer steps than this is not worth a result: a Stop before
then adds nothing."""
CHECK_EVERY = 50
"""Steps between two measurements of the held-out loss (each reads the device once)."""
MAX_AUTO_STEPS = 3200
"""The most steps of a validation-stopped run (``steps=0``), ramp-down included: about 190 s on 2
CPU cores at 0.055-0.06 s per step of 4 patches of 64² (the 200 s time budget,
:data:`MAX_AUTO_SECONDS`, ends it sooner on a slower machine). Chosen with :data:`RAMP_STEPS`, the
``patience`` of 600 and :data:`ROLLBACK_AT_PLATEAU` on the tuning fields (``bench_n2n.py
--choose``, two seeds each): the cap of 2200 before ended every Poisson-Gaussian run with the
held-out loss still falling (synthetic cells seed 3, seed 0: 0.64 dB under ``steps=3000``; 0.04 dB
under it with this rule). History: 1100 steps with batches of 8, 2200 with batches of 4."""
MAX_AUTO_SECONDS = 200.0
"""The training time of a validation-stopped run, counted from its first check of the held-out loss:
the ramp-down starts early enough, at the step rate measured so far, to end within it (on a CPU
slower than :data:`MAX_AUTO_STEPS` assumes; the provenance's ``time_capped`` says when it did)."""
ROLLBACK_AT_PLATEAU = True
"""At the plateau of the held-out loss the network and its average go back to the best averaged
weights, and the ramp-down starts from them rather than from the weights that over-fitted in the
``patience`` steps since. On scikit-image ``cell`` (Gaussian 0.15, seed 0) the best weights came
before the plateau and the ramp from the later ones never regained them: 0.21 dB under
``steps=3000`` without, 0.09 with it in the chosen rule (``bench_n2n.py --choose``)."""
VALIDATED_LEARNING_RATE = 1e-3
"""Adam's rate in a validation-stopped run (``learning_rate=0``). Chosen on the tuning fields
(scikit-image ``cell`` Gaussian 0.15, synthetic cells seed 3 Poisson-Gaussian 30 photons; 256²,
``bench_n2n.py``, batches of 8): the held-out best comes after ~800 steps instead of ~1500 at 3e-4,
at the same PSNR, and the kept weights stop before the over-fitting that follows. The paper's 3e-4
in this rule gained 0.1 dB on the tuning fields (runs reaching the step cap) but lost 0.14 dB on
average to 1e-3 on held-out fields where the time budget ended the run (``bench_n2n.py --defaults
--rule``; docs/benchmarks/noise2noise.md): not adopted."""
PAPER_LEARNING_RATE = 3e-4
"""Adam's rate for a fixed step count (Lehtinen et al. 2018), ramped down over the last 30 %."""
RAMP_STEPS = 900
"""A validation-stopped run ends with the learning rate ramped down (cosine) to 0 over this many
steps, from the plateau of the held-out loss (``patience`` steps without improvement), or in time
to end at :data:`MAX_AUTO_STEPS` or within :data:`MAX_AUTO_SECONDS`. At a constant rate the
averaged weights level off at a loss the rate sets: on the moon field (Gaussian 0.15, seed 0) the
first rule, with no ramp, stopped at its plateau 0.28 dB under ``steps=1500`` with the paper's
ramp-down. 300 steps of 8 patches then, 600 of 4, 900 of 4 now (30 % of the cap, as the paper's
schedule)."""
WEIGHT_AVERAGING = 0.995
"""Decay of the exponential moving average of the weights in a validation-stopped run (a window
of about 200 steps, warmed up from the start: :class:`~napari_ssl_restore.engine.train.EMA`),
which takes the place of the learning-rate ramp-down."""


@dataclasses.dataclass(frozen=True)
class Params:
    """Noise2Noise settings (network and optimiser from Lehtinen et al. 2018)."""

    method_title = "Noise2Noise"

    mode: Literal["train", "apply"] = param(
        "train", "'train' a network on noisy pairs (from scratch, or fine-tuning `model`) and "
                 "denoise with it; 'apply' a saved `model` without training (no pairs needed).",
        choices=("train", "apply"))
    pairing: Literal["auto", "target", "time", "z"] = param(
        "auto", "Where the noisy pairs come from: 'target' (a second acquisition, target=), "
                "'time' (consecutive frames, both directions), 'z' (adjacent planes; only for finely "
                "sampled stacks). 'auto': target if given, else time if there is a T axis.",
        choices=("auto", "target", "time", "z"), when=TRAIN)
    model: str = param("", "A saved model (.pt, or a bioimage.io zip this plugin exported) to "
                           "apply, or to start training from.", widget="open_file")
    save_model: str = param("", "Save the trained model here (.pt), weights + settings + "
                                "provenance in one file.", widget="save_file", when=TRAIN)
    loss: Literal["l2", "l1", "l0"] = param(
        "l2", "'l2' for Gaussian/Poisson noise, 'l1' for median-type noise (multiplicative "
              "Bernoulli, overlays), 'l0' (annealed) for random-valued impulse noise.",
        choices=("l2", "l1", "l0"), when=TRAIN)
    steps: int = param(0, "Training steps; 0 = until the loss on the held-out strip stops "
                          "improving, then a ramp-down (at most 3200 in all, or about 200 s), "
                          "keeping the best "
                          "weights. A fixed count ramps the learning rate down over its last "
                          "30 %.", min=0,
                       max=1_000_000, when=TRAIN)
    patience: int = param(600, "steps=0: once the held-out loss has not improved for this many "
                               "steps, go back to the best weights, ramp the learning rate down "
                               "over 900 more and stop.",
                          min=CHECK_EVERY, max=100_000, step=CHECK_EVERY, when=TRAIN, advanced=True)
    batch_size: int = param(4, "Patches per step (4, as the authors' released training).", min=1,
                            max=1024, when=TRAIN, advanced=True)
    patch_size: int = param(64, "Side of the training patches in pixels; a multiple of "
                                "2**depth (paper: 256; 64 trains ~10x faster on a CPU).",
                            min=8, max=2048, when=TRAIN, advanced=True)
    learning_rate: float = param(0.0, "Adam learning rate; 0 = 1e-3 when the held-out loss "
                                      "stops the run (steps=0: the best averaged weights are kept, "
                                      "so a faster rate is safe), the paper's 3e-4 for a fixed "
                                      "count (ramped down to 0 over its last 30 %).", min=0.0,
                                 max=1.0, step=1e-4, when=TRAIN, advanced=True)
    features: int = param(48, "U-Net feature channels (paper: 48; 32 is the smaller option).",
                          min=4, max=256, when=TRAIN, advanced=True)
    depth: int = param(5, "U-Net poolings (paper: 5; 4 with features=32 is the smaller option).",
                       min=1, max=7, when=TRAIN, advanced=True)
    augment: bool = param(True, "Random flips and 90° rotations of the training patches.", when=TRAIN,
                          advanced=True)
    validation_fraction: float = param(0.125, "Share of the rows held out at the bottom of every "
                                              "pair to measure the validation loss (never trained "
                                              "on); 0 = none (then steps=0 trains a count chosen "
                                              "from the data size).", min=0.0, max=0.5,
                                       step=0.025, when=TRAIN, advanced=True)
    tile_size: int = param(0, "Largest tile side for prediction; 0 = chosen from the device's "
                              "memory (whole planes where they fit).", min=0, max=8192,
                           advanced=True)
    tile_overlap: int = param(32, "Overlap of prediction tiles, blended smoothly.", min=0,
                              max=1024, advanced=True)
    preview_every: int = param(100, "Training steps between previews (prediction on a crop).",
                               min=1, max=1_000_000, when=TRAIN, advanced=True)
    mixed_precision: bool = param(True, "bfloat16 autocast on CUDA (ignored on the CPU).", advanced=True)

    def __post_init__(self):
        mult = 2 ** self.depth
        if self.patch_size % mult:
            raise ValueError(f"Noise2Noise: patch_size must be a multiple of 2**depth = {mult}; "
                             f"got {self.patch_size}. Use "
                             f"{max(mult, round(self.patch_size / mult) * mult)}.")
        if self.tile_size and self.tile_overlap >= self.tile_size:
            raise ValueError("Noise2Noise: tile_overlap must be smaller than tile_size.")
        if self.mode == "apply" and not self.model:
            raise ValueError("Noise2Noise: mode='apply' needs model= (a .pt file saved by a "
                             "training run); or use mode='train'.")


# --- losses --------------------------------------------------------------------------------------

def n2n_loss(pred, target, kind: str, progress: float = 0.0):
    """Loss between prediction and *noisy* target. ``progress`` in [0, 1] anneals L0's exponent."""
    import torch

    diff = pred - target
    if kind == "l2":
        return torch.mean(diff ** 2)
    if kind == "l1":
        return torch.mean(diff.abs())
    gamma = 2.0 * (1.0 - progress)  # annealed from 2 (L2) to 0 (L0), as in the paper
    return torch.mean((diff.abs() + 1e-8) ** max(gamma, 1e-3))


# --- pairs ---------------------------------------------------------------------------------------

def make_pairs(lead_axes: str, lead_shape: tuple[int, ...], pairing: str,
               has_target: bool) -> tuple[list[tuple[int, int]], str]:
    """(source, target) plane pairs for training, and the pairing used.

    Planes are numbered over the image (``0 .. n-1``, canonical T-major order) and then the
    second acquisition (``n .. 2n-1``). ``lead_axes``/``lead_shape`` are the image's T/Z axes.
    """
    lead = lead_axes
    n = int(np.prod(lead_shape, dtype=int))
    if pairing == "auto":
        pairing = "target" if has_target else ("time" if "T" in lead else "none")
    if pairing == "none":
        raise ValueError(
            "Noise2Noise needs pairs of noisy images: give target= (a second acquisition of the "
            "same field; --target FILE), or a time-lapse (axes with T, e.g. 'TYX'), or set "
            "pairing='z' for adjacent Z planes. To denoise with a saved model, use mode='apply'."
        )
    pairs: list[tuple[int, int]] = []
    if pairing == "target":
        if not has_target:
            raise ValueError("pairing='target' needs target= (a second acquisition of the field).")
        for i in range(n):
            pairs += [(i, n + i), (n + i, i)]
        return pairs, pairing
    axis = "T" if pairing == "time" else "Z"
    if axis not in lead:
        raise ValueError(f"pairing={pairing!r} needs a {axis} axis; the image has axes "
                         f"{(lead + 'YX')!r}. Set axes (e.g. '{axis}YX') or use target=.")
    k = lead.index(axis)
    if lead_shape[k] < 2:
        raise ValueError(f"Noise2Noise needs at least 2 planes along {axis} to make pairs; got "
                         f"{lead_shape[k]}. Pick a stack or give target=.")
    index = np.arange(n).reshape(lead_shape)
    a = np.take(index, np.arange(lead_shape[k] - 1), axis=k).ravel()
    b = np.take(index, np.arange(1, lead_shape[k]), axis=k).ravel()
    for i, j in zip(a, b, strict=False):
        pairs += [(int(i), int(j)), (int(j), int(i))]
    return pairs, pairing


def auto_steps(hw: tuple[int, int], n_pairs: int, patch: int, batch: int) -> int:
    """About 20 passes over the distinct patches of the pairs, clipped to [300, 3000]."""
    distinct = n_pairs * max(1, (hw[0] // patch) * (hw[1] // patch))
    return int(np.clip(round(20 * distinct / batch), 300, 3000))


# --- the generator -------------------------------------------------------------------------------

def run(planes: Planes, params: Params, ctx: RunContext, out: Outputs,
        target: Planes | None = None):
    """Train (or load) a Noise2Noise U-Net, then denoise every plane, streamed."""
    from ..core.models import build, checkpoint, load_checkpoint, save_model
    from ..engine.predict import Predictor, predict_after_training
    from ..engine.train import TRAIN_BYTES, PatchSampler, planes_within, seeded_init, spread, to_device
    from ..nets.unet import UNet

    device = ctx.torch_device
    rng = np.random.default_rng(ctx.seed)
    c, n = planes.c, len(planes)
    ckpt = load_checkpoint(params.model) if params.model else None
    if ckpt is not None:
        if ckpt["config"]["in_channels"] != c:
            raise ValueError(f"model {params.model!r} expects {ckpt['config']['in_channels']} "
                             f"channel(s) but the image has {c}.")
        net = build(ckpt, device)
    else:
        with seeded_init(ctx.seed):
            net = UNet(c, c, params.features, params.depth)
        net = net.to(device)
    info: dict = {"device": str(device), "trained_steps": 0, "stopped": False}
    if ckpt is not None:
        info["model_loaded"] = params.model
    amp = params.mixed_precision and device.type == "cuda"

    stopped, total = False, 0
    if params.mode == "train":
        pairs, pairing = make_pairs(planes.axes[:-3], planes.lead, params.pairing,
                                    target is not None)
        if min(planes.hw) < params.patch_size:
            raise ValueError(f"patch_size {params.patch_size} is larger than the image "
                             f"({planes.hw[0]}x{planes.hw[1]}); choose a patch_size of at most "
                             f"{min(planes.hw)} (a multiple of 2**depth).")
        # a long stack trains on pairs spread over it, as many as TRAIN_BYTES holds
        plane_bytes = int(np.prod(planes.hw)) * c * 4
        chosen = [pairs[k] for k in spread(len(pairs), planes_within(TRAIN_BYTES, plane_bytes, 2))]
        needed = sorted({g for pair in chosen for g in pair})
        where = {g: k for k, g in enumerate(needed)}
        field = to_device(np.stack([planes[g] if g < n else target[g - n] for g in needed]),
                          device)
        rows = [(where[a], where[b]) for a, b in chosen]
        held_out, train_rows = held_out_strip(field, rows, params, 2 ** net.depth)
        sampler = PatchSampler([field[:, :, :train_rows]] * 2, rows, params.patch_size, rng,
                               augment=params.augment)
        info.update(pairing=pairing, pairs=len(chosen), pairs_total=len(pairs),
                    held_out_rows=planes.hw[0] - train_rows)
        validated = params.steps == 0 and held_out is not None and params.loss != "l0"
        total = params.steps or (MAX_AUTO_STEPS if validated else auto_steps(
            planes.hw, len(chosen), params.patch_size, params.batch_size))
        fit = yield from _train(net, sampler, params, total=total, grand_total=total + n,
                                preview_plane=planes[chosen[0][0]] if chosen[0][0] < n
                                else target[chosen[0][0] - n], amp=amp, held_out=held_out,
                                validated=validated)
        del field, sampler
        stopped = fit["stopped"]
        useful = min(MIN_USEFUL_STEPS, total)
        total = fit["steps"]  # a validation-stopped run ends early: prediction follows on
        if stopped and ckpt is None and fit["steps"] < useful:
            raise StopRequested(f"Stopped after {fit['steps']} training steps, before the network "
                                f"had learned anything (at least {useful} are needed); nothing "
                                "was kept.")
        info.update(trained_steps=fit["steps"], train_loss=fit["train_loss"],
                    val_loss=fit["val_loss"], stopped=stopped, stop_rule=fit["stop_rule"])
        if fit["held_out_loss"]:
            info.update(held_out_loss=fit["held_out_loss"], best_step=fit["best_step"],
                        kept=fit["kept"])
        if fit["annealed_from"] is not None:
            info.update(annealed_from=fit["annealed_from"], time_capped=fit["time_capped"],
                        rolled_back_to=fit["rolled_back_to"])
            if fit["time_capped"] and not stopped:
                info["caveats"] = [f"Training ended on its time budget after {fit['steps']} "
                                   "steps, before the held-out loss levelled off: a fixed, "
                                   "larger `steps` may do better."]
        ckpt_out = checkpoint(net, architecture="unet",
                              normalization={"kind": "percentile", "low": 0.1, "high": 99.9},
                              provenance={"method": "noise2noise", "params": dataclasses.asdict(params),
                                          "steps": fit["steps"], "seed": ctx.seed})
        if params.save_model:
            info["model_saved"] = save_model(ckpt_out, params.save_model)
    else:
        ckpt_out = ckpt

    predictor = Predictor(net, device, tile=params.tile_size, overlap=params.tile_overlap,
                          multiple=2 ** net.depth, amp=amp)

    def write(i: int, plane: np.ndarray) -> None:
        out["image"][i] = plane

    done, stopped = yield from predict_after_training(predictor, planes, write, step0=total,
                                                      stopped=stopped, verb="denoising")
    info.update(planes_done=done, stopped=stopped)
    return MethodResult({}, info, {"model": ckpt_out})


def held_out_strip(field, rows: list[tuple[int, int]], params: Params, multiple: int):
    """The held-out validation pairs and the rows left for training.

    The bottom ``validation_fraction`` of every plane's rows (a multiple of ``multiple``, the
    network's size step) is never sampled for training; up to four pairs of it, at most 512
    columns wide, are the validation pairs ``(source, target)``. ``(None, H)`` when there is no
    room for both a strip and a training patch above it.
    """
    import torch

    h, w = field.shape[-2:]
    if params.validation_fraction <= 0:
        return None, h
    strip = max(multiple, int(round(h * params.validation_fraction / multiple)) * multiple)
    width = min(w, 512) // multiple * multiple
    if h - strip < min(params.patch_size, h) or width < multiple:
        return None, h
    from ..engine.train import spread

    picked = [rows[k] for k in spread(len(rows), 4)]
    src = torch.stack([field[a, :, h - strip:, :width] for a, _ in picked])
    tgt = torch.stack([field[b, :, h - strip:, :width] for _, b in picked])
    return (src, tgt), h - strip


class _Anneal:
    """The learning-rate factor of a validation-stopped run: constant, then a cosine ramp to 0 over
    :data:`RAMP_STEPS` from the plateau of the held-out loss (``patience`` steps without a better
    one), or in time to end by ``total`` steps, or in time to end within ``seconds`` of the first
    check at the step rate measured so far — whichever comes first."""

    def __init__(self, total: int, patience: int, seconds: float = 0.0):
        self.total, self.patience, self.plateau = total, patience, None
        self.cap, self.seconds, self.clock = total, seconds, None

    def start(self) -> int:
        return min(self.plateau or self.total, max(self.total - RAMP_STEPS, 0))

    @property
    def timed(self) -> bool:
        """Whether the time budget, not a plateau or the step cap, started the ramp-down."""
        return self.total < self.cap and (self.plateau is None
                                          or self.plateau > self.total - RAMP_STEPS)

    def __call__(self, it: int) -> float:
        done = (it - self.start()) / RAMP_STEPS
        return 1.0 if done <= 0 else 0.5 * (1 + math.cos(math.pi * min(done, 1.0)))

    def finished(self, it: int, best_step: int) -> bool:
        """At a check: note a plateau, or a time budget that the step count would exceed; True
        once the ramp has run its course."""
        if self.plateau is None and it - best_step >= self.patience:
            self.plateau = it
        if self.seconds > 0 and it < self.start():
            now = time.perf_counter()
            if self.clock is None:  # the first check: the step rate is measured from here
                self.clock = (it, now)
            elif it > self.clock[0] and now > self.clock[1]:
                rate = (now - self.clock[1]) / (it - self.clock[0])  # seconds per step
                left = self.seconds - (now - self.clock[1])
                affordable = it + max(int(left / rate), 0) // CHECK_EVERY * CHECK_EVERY
                if affordable < self.total:
                    # the ramp then starts no earlier than now: its cosine begins at full rate
                    self.total = max(affordable, it + RAMP_STEPS)
        return it >= self.start() + RAMP_STEPS


def _train(net, sampler, params: Params, *, total: int, grand_total: int, preview_plane, amp,
           held_out=None, validated: bool = False):
    """Train ``net`` on ``sampler``'s pairs on the engine's loop; a generator.

    ``held_out``: validation pairs ``(source, target)`` never trained on; their loss is measured
    every :data:`CHECK_EVERY` steps. ``validated``: train at a constant learning rate with an
    exponential moving average of the weights until the average's held-out loss has not improved
    for ``params.patience`` steps, go back to the best average, ramp the rate down over
    :data:`RAMP_STEPS` more (ending by ``total`` steps and within :data:`MAX_AUTO_SECONDS`) and
    keep the best average; otherwise ``total`` steps with the cosine ramp-down, the
    final weights kept.

    Returns ``{"steps", "train_loss", "val_loss", "stopped", "stop_rule", "held_out_loss",
    "best_step", "kept", "annealed_from", "time_capped", "rolled_back_to"}``; a Stop keeps the best
    weights so far (the current ones when not ``validated``).
    """
    import torch

    from ..engine.predict import Predictor, centre_crop
    from ..engine.train import EMA, cosine_rampdown, optimise

    layout = torch.channels_last  # 0.185 -> 0.150 s per step in isolation on the 2-core CPU
    net.to(memory_format=layout)
    rate = params.learning_rate or (VALIDATED_LEARNING_RATE if validated else PAPER_LEARNING_RATE)
    opt = torch.optim.Adam(net.parameters(), lr=rate, betas=(0.9, 0.99), foreach=True)
    ema = EMA(net, WEIGHT_AVERAGING) if validated else None
    judged = ema.average if ema is not None else net  # the weights the strip judges and keeps
    crop = centre_crop(preview_plane, 256)
    preview_net = Predictor(judged, sampler.fields[0].device, multiple=2 ** net.depth, amp=amp)
    state: dict = {"val": float("nan"), "best": float("inf"), "best_step": 0, "best_state": None,
                   "history": [], "rolled_back_to": None}
    anneal = _Anneal(total, params.patience, MAX_AUTO_SECONDS if validated else 0.0)
    device_type = sampler.fields[0].device.type

    def validation(it: int) -> float:
        if held_out is None:
            return float("nan")
        training = judged.training
        judged.eval()
        with torch.inference_mode():
            value = float(n2n_loss(judged(held_out[0]), held_out[1], params.loss, it / total))
        judged.train(training)
        return value

    def step(it: int):
        src, tgt = sampler(params.batch_size)
        src = src.contiguous(memory_format=layout)
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=amp):
            pred = net(src)
        return n2n_loss(pred.float(), tgt, params.loss, it / total)

    def check(it: int) -> bool:
        value = state["val"] = validation(it)
        state["history"].append([it, round(value, 8)])
        if value < state["best"]:
            state["best"], state["best_step"] = value, it
            if validated:
                state["best_state"] = {k: v.detach().clone()
                                       for k, v in judged.state_dict().items()}
        if not validated:
            return False
        flat = anneal.plateau
        done = anneal.finished(it, state["best_step"])
        if ROLLBACK_AT_PLATEAU and flat is None and anneal.plateau is not None \
                and anneal.start() == it and state["best_state"] is not None:
            # the ramp-down starts here from the best averaged weights, not from what over-fitted
            # since (a plateau noted after the step cap or the time budget began it changes nothing)
            net.load_state_dict(state["best_state"])
            judged.load_state_dict(state["best_state"])
            state["rolled_back_to"] = state["best_step"]
        return done

    def describe(it: int, loss: float):
        text = f"training step {it}/{total}" if not validated else f"training step {it}"
        text += f", loss {loss:.3e}"
        if held_out is not None and state["history"]:
            text += f", held-out {state['val']:.3e} (best at {state['best_step']})"
        return text, {"loss": loss, "val_loss": state["val"], "step": it}

    def preview(_it: int):
        return preview_net(crop[None])[0]

    net.train()
    loop = yield from optimise(step, opt, total,
                               lr_factor=anneal if validated else cosine_rampdown(total, 0.3),
                               after_step=(lambda _it: ema.update()) if ema is not None else None,
                               finished=check if held_out is not None else None,
                               check_every=CHECK_EVERY, describe=describe, preview=preview,
                               preview_every=params.preview_every, total=grand_total)
    net.eval()
    kept = "final"
    if validated:
        if state["best_state"] is not None:
            net.load_state_dict(state["best_state"])
            kept = f"step {state['best_step']}"
        else:  # stopped before the first check: the average so far
            net.load_state_dict(judged.state_dict())
    final = validation(loop.steps)
    return {"steps": loop.steps, "train_loss": loop.loss, "val_loss": final,
            "stopped": loop.stopped, "held_out_loss": state["history"],
            "best_step": state["best_step"] if validated else loop.steps, "kept": kept,
            "annealed_from": anneal.start() if validated else None,
            # the budget began the ramp-down, and training reached it (not a Stop before)
            "time_capped": validated and anneal.timed and loop.steps > anneal.start(),
            "rolled_back_to": state["rolled_back_to"],
            "stop_rule": ("held-out loss" if validated else "fixed count")}


def _demo() -> list[dict]:
    from ..data import noisy_pair

    s = noisy_pair(size=128, sigma=0.15)
    return [{**s, "params": {"steps": 300, "features": 32, "depth": 4, "batch_size": 4}}]


SPEC = MethodSpec(
    name="noise2noise",
    title="Noise2Noise (Lehtinen et al. 2018): train a denoiser on pairs of noisy images",
    task="denoise",
    params=Params,
    run=run,
    function="denoise_noise2noise",
    outputs=(Output("image", "The denoised image, same shape, axes and dtype as the input."),),
    inputs=(ExtraInput("target", "A second noisy acquisition of the same field (same shape): "
                                 "the training target, and vice versa.", like_image=True,
                       when=(("mode", ("train",)),)),),
    scaling="percentile",
    uses_torch=True,
    demo=_demo,
    linked_planes=lambda p: ("mode='train' trains one network on pairs drawn from the whole stack "
                             "(train once with save_model=, then use mode='apply' and model=)"
                             if p.mode == "train" else ""),
)

denoise_noise2noise = public_function(
    SPEC,
    summary="Denoise with a U-Net trained on pairs of noisy images (Noise2Noise).",
    notes="""
    Minimises :math:`\\mathbb{E}\\, L(f_\\theta(x), y)` over pairs :math:`(x, y)` of independent noisy
    observations of the same scene: two acquisitions (``target=``), consecutive frames
    (``pairing='time'``) or adjacent planes (``pairing='z'``). With :math:`L = L_2` and zero-mean noise
    the minimiser equals that of training on clean targets. ``full_output=True`` also returns the
    trained ``model`` checkpoint (save it with ``save_model=`` to reuse it with ``mode='apply'``).
    """,
    references="""
    .. [1] J. Lehtinen, J. Munkberg, J. Hasselgren, S. Laine, T. Karras, M. Aittala, T. Aila.
           Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018.
    """,
    examples="""
    >>> import numpy as np
    >>> from napari_ssl_restore import denoise_noise2noise
    >>> rng = np.random.default_rng(0)
    >>> clean = rng.random((32, 32)).astype(np.float32)
    >>> a = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    >>> b = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    >>> out = denoise_noise2noise(a, target=b, steps=5, patch_size=16, features=8, depth=2)
    >>> out.shape
    (32, 32)
    """,
)
