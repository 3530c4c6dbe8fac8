"""The usual OpenCV Dark Channel Prior recipe, written out as a benchmark baseline.

This is the pipeline most DCP scripts on the web follow (erode for the dark channel, a full
``argsort`` for the airlight averaged over the top 0.1 %, ``boxFilter``-based guided filter on the
grey image, ``t0`` clamp). It needs ``opencv-python-headless``, a benchmark-only dependency; the
package itself never imports OpenCV. Arguments mirror :class:`napari_ssl_restore.methods.dcp.Params`;
``radius`` is a radius (window ``2r+1``) here too, so both sides compute the same filter.
"""
from __future__ import annotations

import cv2
import numpy as np


def dark_channel(img: np.ndarray, patch: int) -> np.ndarray:
    per_pixel = np.min(img, axis=2)
    return cv2.erode(per_pixel, cv2.getStructuringElement(cv2.MORPH_RECT, (patch, patch)))


def airlight(img: np.ndarray, dark: np.ndarray, fraction: float = 0.001) -> np.ndarray:
    n_pix = dark.size
    n_top = max(int(np.floor(n_pix * fraction)), 1)
    order = dark.reshape(n_pix).argsort()[n_pix - n_top:]
    return img.reshape(n_pix, 3)[order].mean(axis=0)


def guided(gray: np.ndarray, p: np.ndarray, radius: int, eps: float) -> np.ndarray:
    win = (2 * radius + 1, 2 * radius + 1)

    def box(x):
        return cv2.boxFilter(x, cv2.CV_64F, win, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(gray), box(p)
    a = (box(gray * p) - mean_i * mean_p) / (box(gray * gray) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * gray + box(b)


def dehaze(rgb_u8: np.ndarray, patch: int = 15, omega: float = 0.95, t0: float = 0.1,
           radius: int = 60, eps: float = 1e-4):
    """Dehaze an 8-bit RGB image; return (J in [0, 1], refined t, A)."""
    img = rgb_u8.astype(np.float64) / 255.0
    dark = dark_channel(img, patch)
    a = airlight(img, dark)
    t = 1.0 - omega * dark_channel(img / a, patch)
    gray = cv2.cvtColor(rgb_u8, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255.0
    t = guided(gray, t, radius, eps)
    j = (img - a) / np.maximum(t, t0)[..., None] + a
    return np.clip(j, 0, 1), t, a
