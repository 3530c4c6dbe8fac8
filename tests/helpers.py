"""Tiny settings and inputs that run every registered method, in each of its tasks or modes, in a
second or two. Used by the API, CLI and napari sweeps; a new method needs an entry here (a test
checks), so it cannot land without running from every front end."""
from __future__ import annotations

import numpy as np

from napari_ssl_restore.core.registry import get_method, list_methods

NET = {"channels": 8, "depth": 2, "input_depth": 4, "skip_channels": 2}
VIDEO = {"steps_per_frame": 1, "epochs": 1, "patch_size": 16, "batch_size": 1}

TINY: dict[str, dict] = {
    "dcp": {"patch_size": 5, "guided_radius": 4},
    "dip": {"max_iter": 4, "sr_factor": 2, **NET},
    "noise2noise": {"steps": 3, "features": 8, "depth": 2, "patch_size": 16, "batch_size": 2},
    "double-dip": {"max_iter": 3, "patch_size": 5, "guided_radius": 4, **NET},
    "dncnn": {"tile_size": 32, "tile_overlap": 8},
    "frame2frame": dict(VIDEO),
    "restore-from-restored": dict(VIDEO),
    "physics-gan": {"steps": 4, "features": 4, "blocks": 1, "disc_features": 4, "patch_size": 16,
                    "batch_size": 2, "check_every": 2, "sr_factor": 2, "psf_sigma": 1.0},
    "cycle-dehaze": {"steps": 3, "features": 4, "blocks": 1, "disc_features": 4, "patch_size": 16,
                     "batch_size": 1, "check_every": 2, "work_size": 16},
    "disentangled-deblur": {"steps": 3, "features": 4, "blocks": 1, "disc_features": 4,
                            "patch_size": 16, "batch_size": 1, "check_every": 2},
    "richardson-lucy": {"max_iter": 5, "psf_sigma": 1.0},
    "classic-denoise": {"passes": 1, "patch_distance": 2, "patch_size": 3},
}

#: settings that cannot run on their own (they need a model another run saves)
SKIP = {("noise2noise", "apply"), ("cycle-dehaze", "apply"), ("disentangled-deblur", "apply")}


def variants() -> list[tuple[str, dict]]:
    """``(method, settings)`` for every method and every choice of its task/mode parameter."""
    out = []
    for method in list_methods():
        spec = get_method(method)
        controls = sorted((p for p in spec.param_info if p.name in ("task", "mode")),
                          key=lambda p: p.name != "task")  # the task when there is one
        if not controls:
            out.append((method, {}))
            continue
        for choice in controls[0].choices:
            if (method, choice) not in SKIP:
                out.append((method, {controls[0].name: choice}))
    return out


def variant_id(v: tuple[str, dict]) -> str:
    return "-".join([v[0], *map(str, v[1].values())])


def sample(method: str, settings: dict) -> tuple[np.ndarray, str, dict[str, np.ndarray]]:
    """A tiny input for ``method`` under ``settings``: ``(image, axes, extra inputs)``."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    base = 0.5 + 0.3 * np.sin(xx / 2.0) * np.cos(yy / 3.0)
    grey = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
    grey8 = (grey * 255).astype(np.uint8)
    spec = get_method(method)
    if method == "dcp":
        rgb = np.stack([grey8, grey8 // 2 + 60, 255 - grey8], axis=-1)
        return rgb, "YXC", {}
    if spec.video:
        frames = np.stack([np.roll(base, k, axis=1) for k in range(3)])
        noisy = frames + 0.05 * rng.standard_normal(frames.shape)
        return (np.clip(noisy, 0, 1) * 4000).astype(np.uint16), "TYX", {}
    extras: dict[str, np.ndarray] = {}
    task = settings.get("task")
    if method == "noise2noise":
        second = np.clip(base + 0.05 * rng.standard_normal(base.shape), 0, 1)
        return grey.astype(np.float32), "YX", {"target": second.astype(np.float32)}
    if task == "inpaint":
        mask = np.zeros(grey.shape, np.uint8)
        mask[8:14, 8:14] = 1
        extras["mask"] = mask
    if any(i.name == "clean" for i in spec.inputs) and settings.get("mode", "train") == "train":
        clean = 0.5 + 0.4 * np.sin(np.mgrid[:2, :32, :32][2] / 1.5)  # unpaired, sharper, larger
        extras["clean"] = (np.clip(clean, 0, 1) * 255).astype(np.uint8)
    if task == "separate":
        extras["second"] = (np.clip(0.5 * base + 0.5 * np.sin(yy / 2.5) ** 2, 0, 1) * 255) \
            .astype(np.uint8)
    return grey8, "YX", extras


def output_shape(method: str, settings: dict, image: np.ndarray, axes: str) -> tuple[int, ...]:
    """The primary output's shape: the input's, Y/X times the factor for super-resolution, without
    C for label outputs."""
    shape = list(image.shape)
    spec = get_method(method)
    zoom = spec.zoom(spec.make_params(**{**TINY[method], **settings}))
    for a in "YX":
        shape[axes.index(a)] *= zoom
    return tuple(shape)
