"""Explicit axis layouts.

Every entry point takes an axes string such as ``"YX"``, ``"ZYX"``, ``"TYX"``, ``"TZYX"``, ``"YXC"`` or
``"TYXC"``: ``T`` is time (the frame axis of video methods), ``Z`` depth, ``Y``/``X`` the image plane and
``C`` channels (RGB or a few fluorescence channels). Methods see data in one canonical layout — the
present axes in ``T Z Y X C`` order, always with a ``C`` axis — read plane by plane, and results go
back to the caller's own order (:mod:`napari_ssl_restore.engine.planes`).
"""
from __future__ import annotations

import dataclasses

import numpy as np

CANONICAL = "TZYXC"
_ALLOWED = set(CANONICAL)


@dataclasses.dataclass(frozen=True)
class Layout:
    """How an input array maps to the canonical layout (and back)."""

    axes: str
    """The caller's axes string, upper case, one letter per array dimension."""
    shape: tuple[int, ...]
    """The caller's array shape."""

    @property
    def canonical(self) -> str:
        """Canonical axes of the method-facing array (always ends with ``YXC``)."""
        return "".join(a for a in CANONICAL if a in self.axes or a == "C")

    @property
    def has_channels(self) -> bool:
        return "C" in self.axes

    @property
    def leading(self) -> str:
        """Non-spatial, non-channel axes in canonical order (``""``, ``"T"``, ``"Z"`` or ``"TZ"``)."""
        return "".join(a for a in "TZ" if a in self.axes)

    def size(self, axis: str) -> int:
        return self.shape[self.axes.index(axis)] if axis in self.axes else 1


def infer_axes(shape: tuple[int, ...], *, rgb: bool = False, video: bool = False) -> str:
    """Guess the axes of an array from its shape, as napari would display it.

    2-D is ``YX``; a trailing axis of 3 or 4 with ``rgb=True`` is ``C``; a 3-D grey stack is ``TYX`` for
    video methods and ``ZYX`` otherwise; 4-D is ``TZYX`` (or ``TYXC`` when RGB). Anything the guess gets
    wrong can be overridden with an explicit ``axes=``.
    """
    ndim = len(shape)
    if rgb:
        table = {3: "YXC", 4: "TYXC" if video else "ZYXC", 5: "TZYXC"}
    else:
        table = {2: "YX", 3: "TYX" if video else "ZYX", 4: "TZYX"}
    if ndim not in table:
        if ndim < 2:
            raise ValueError(
                f"Expected an image with at least 2 dimensions (Y, X); got shape {tuple(shape)}. "
                "Pass a 2-D image, a stack or a time-lapse."
            )
        raise ValueError(
            f"Cannot guess the axes of a {ndim}-D array with shape {tuple(shape)}: supported layouts "
            "are "
            "YX, ZYX, TYX, TZYX and, with channels, YXC, TYXC, ZYXC, TZYXC. Pass axes= explicitly, "
            "or take a sub-stack first."
        )
    return table[ndim]


def check_axes(axes: str, shape: tuple[int, ...]) -> str:
    """Validate an axes string against an array shape; return it upper-cased."""
    if not isinstance(axes, str) or not axes:
        raise ValueError(f"axes must be a string such as 'YX' or 'TYX'; got {axes!r}.")
    up = axes.strip().upper()
    bad = sorted(set(up) - _ALLOWED)
    if bad:
        raise ValueError(
            f"axes {axes!r} has unknown letter(s) {', '.join(bad)}: use T (time), Z (depth), Y, X and "
            "C (channels), e.g. 'TYX' or 'YXC'."
        )
    if len(set(up)) != len(up):
        raise ValueError(f"axes {axes!r} repeats a letter; each of T, Z, Y, X, C may appear once.")
    if "Y" not in up or "X" not in up:
        raise ValueError(f"axes {axes!r} must contain both Y and X (the image plane).")
    if len(up) != len(shape):
        raise ValueError(
            f"axes {axes!r} has {len(up)} letters but the image has {len(shape)} dimensions "
            f"(shape {tuple(shape)}). Give one letter per dimension, e.g. "
            f"axes={infer_axes(shape) if 2 <= len(shape) <= 4 else 'TZYX'!r}."
        )
    return up


def plane_maps(maps: np.ndarray, image_shape: tuple[int, ...], *, name: str, hint: str) -> np.ndarray:
    """Per-plane 2-D maps ``(N, H, W)`` (masks, scribbles) for a canonical ``[T][Z]YXC`` image.

    ``maps`` is one ``(H, W)`` plane used for every plane, or one per plane (the image's shape without
    C, canonical order). Anything else fails with a message naming ``name`` and the ``hint``.
    """
    m = np.asarray(maps)
    spatial, lead = tuple(image_shape[-3:-1]), tuple(image_shape[:-3])
    if m.shape == spatial:
        return np.broadcast_to(m, (int(np.prod(lead, dtype=int)),) + spatial)
    if m.shape == lead + spatial:
        return m.reshape((-1,) + spatial)
    raise ValueError(f"{name} shape {m.shape} does not match the image planes {spatial} (or the "
                     f"whole stack {lead + spatial}); {hint}")
