"""npe2 sample data: synthesised or bundled with installed packages, never downloaded."""
from __future__ import annotations

import numpy as np

from ..data import (
    blurred_cells,
    blurred_fields,
    fluorescence_timelapse,
    hazy_fields,
    hazy_scene,
    noisy_cells,
    noisy_pair,
)

INPUT_TAG = "ssl_restore_input"
"""Layer metadata key: ``(input, image layer name)``, the method input a sample layer is for and the
layer it goes with (``("clean", "blurred cells ...")``): a dock whose image is that layer fills the
input with it (``RestoreWidget._fill_inputs``)."""


def fill_input(box, filled, layers, name: str, image, image_changed: bool = False):
    """Fill the optional layer field ``box`` (input ``name``) with the newest of ``layers`` a
    sample made for it and for ``image`` (:data:`INPUT_TAG`), unless its value is the user's
    choice — anything but ``filled``, what this function put there before. When the image has just
    changed (``image_changed``), a value that is the image itself is emptied first (an input equal
    to the image means nothing). Returns what it put there now (None: nothing, or the user's choice
    stays)."""
    if image_changed and image is not None and box.value == image:
        box.value = None
    if box.value is not None and not (filled is not None and box.value == filled):
        return None
    want = getattr(image, "name", None)
    made = [layer for layer in layers
            if tuple(layer.metadata.get(INPUT_TAG, ())) == (name, want) and not layer == image]
    choice = made[-1] if made and any(made[-1] == v for v in box.choices) else None
    box.value = choice
    return choice


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
    a, b = "acquisition A", "acquisition B"  # each the other's target
    return [(s["image"], {"name": a, "metadata": {INPUT_TAG: ("target", b)}, **meta}, "image"),
            (s["target"], {"name": b, "metadata": {INPUT_TAG: ("target", a)}, **meta}, "image")]


def sample_noisy_timelapse():
    from ..data import noisy_video

    s = noisy_video(n_frames=12, size=192, sigma=0.04, poisson=40.0)
    img = np.clip(np.rint(s["image"] * 2000 + 100), 0, 65535).astype(np.uint16)
    return [(img, {"name": "noisy time-lapse", "axis_labels": ("t", "y", "x"),
                   "colormap": "gray"}, "image")]


def sample_blurred_cells():
    s = blurred_cells()
    meta = {"colormap": "gray"}
    image = "blurred cells (widefield, PSF sigma 2)"
    return [(s["clean"], {"name": "clean examples (unpaired)", **meta,
                         "metadata": {INPUT_TAG: ("clean", image)}}, "image"),
            (s["image"], {"name": image, **meta}, "image")]


def sample_hazy_fields():
    s = hazy_fields()
    meta = {"colormap": "gray"}
    image = "hazy widefield fields"
    return [(s["clean"], {"name": "clear examples (unpaired)", **meta,
                         "metadata": {INPUT_TAG: ("clean", image)}}, "image"),
            (s["image"], {"name": image, "axis_labels": ("z", "y", "x"), **meta}, "image")]


def sample_blurred_fields():
    s = blurred_fields()
    meta = {"colormap": "gray"}
    image = "blurred fields (unknown blurs)"
    return [(s["clean"], {"name": "sharp examples (unpaired)", **meta,
                         "metadata": {INPUT_TAG: ("clean", image)}}, "image"),
            (s["image"], {"name": image, "axis_labels": ("z", "y", "x"), **meta}, "image")]
