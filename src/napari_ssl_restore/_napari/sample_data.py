"""npe2 sample data: synthesised or bundled with installed packages, never downloaded."""
from __future__ import annotations

from ..data import fluorescence_timelapse, hazy_scene, noisy_cells, noisy_pair


def sample_hazy_scene():
    s = hazy_scene()
    return [(s["image"], {"name": "hazy scene", "rgb": True}, "image")]


def sample_hazy_fluorescence():
    s = fluorescence_timelapse()
    return [(s["image"], {"name": "hazy fluorescence", "axis_labels": ("t", "y", "x"),
                          "colormap": "gray"}, "image")]


def sample_noisy_cells():
    s = noisy_cells(size=128, sigma=0.1)
    return [(s["image"], {"name": "noisy cells", "colormap": "gray"}, "image")]


def sample_noisy_pair():
    s = noisy_pair(size=256, sigma=0.15)
    meta = {"colormap": "gray"}
    return [(s["image"], {"name": "acquisition A", **meta}, "image"),
            (s["target"], {"name": "acquisition B", **meta}, "image")]
