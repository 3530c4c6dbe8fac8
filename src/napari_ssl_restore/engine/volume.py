"""A Z stack seen through its axial slices: its own lateral (XY) planes are the clean examples for
them (``clean='lateral'``).

An anisotropic volume's lateral resolution is what its axial one should be (Neuroclear's idea:
Park et al., Nat. Commun. 2022). :class:`AxialSlices` gives a method the XZ slices to train on
(one per Y, ``(Z, X)``, Z vertical), the lateral planes as examples, and the XZ and YZ slices to
restore; it averages the two estimates of each voxel and writes the volume plane by plane. The
volume must be sampled with cubic voxels (resample Z to the XY pixel size first) and is held as
three float32 copies in memory (input, sum, map): this view does not stream.
"""
from __future__ import annotations

import numpy as np


def check_one_stack(axes: str) -> None:
    """``clean='lateral'`` needs one Z stack: an error naming the axes otherwise."""
    if "Z" not in axes or "T" in axes:
        raise ValueError(f"clean='lateral' needs one Z stack (axes ZYX); got axes "
                         f"{axes.replace('C', '')!r}. Give clean examples instead, or "
                         "restore one time point at a time.")


def axial_kernel(psf, psf_sigma: float, axial_sigma: float, device):
    """The operator of the axial slices: the extra axial blur of an XZ slice over a lateral plane,
    as a ``(k, 1)`` kernel along Z (rows), Gaussian of std ``sqrt(axial² - lateral²)``
    (:func:`~napari_ssl_restore.physics.operators.axial_blur_kernel`), the widths from a 3-D
    ``psf`` (second moments, see :func:`~napari_ssl_restore.physics.operators.psf_widths`) or
    ``psf_sigma`` and ``axial_sigma``; an error when they leave no axial blur to undo."""
    from ..physics.operators import axial_blur_kernel, psf_widths

    if psf is not None:
        lateral, axial = psf_widths(psf)
        source = f"the 3-D psf's widths (lateral {lateral:.2f}, axial {axial:.2f} px)"
    else:
        lateral, axial = psf_sigma, axial_sigma
        source = f"axial_sigma {axial:g} and psf_sigma {lateral:g}"
    if axial <= lateral:
        raise ValueError(f"clean='lateral': {source} leave no axial blur to undo; set axial_sigma "
                         "(pixels, Z sampled like X) above psf_sigma, or give the 3-D psf=.")
    return axial_blur_kernel(lateral, axial, device)


class AxialSlices:
    """The axial slices of the stack ``planes`` (normalised ``(H, W, C)`` planes along Z), for
    training crops of ``patch_size`` (see the module's notes).

    Attributes
    ----------
    training : planes
        The XZ slices, ``(Z, W, C)`` each: what training crops (left-right flips only, a rotation
        would turn Z sideways).
    slices : planes
        The XZ slices, then the YZ slices: what prediction restores, in :meth:`add`'s order.
    """

    def __init__(self, planes, axes: str, patch_size: int):
        check_one_stack(axes)
        z = len(planes)
        if z < patch_size:
            raise ValueError(f"clean='lateral' crops axial slices at patch_size {patch_size} "
                             f"but the stack has {z} Z planes: lower patch_size to at most {z}, "
                             "or resample Z to the XY pixel size first (cubic voxels).")
        self.volume = planes.stack()  # (Z, H, W, C), normalised
        self.sum = np.zeros_like(self.volume)
        self.residual = np.zeros(self.volume.shape[:-1], np.float32)
        h, w = self.volume.shape[1:3]
        self.h = h
        self.slices = _Slices(self.volume, h, w)
        self.training = _Slices(self.volume, h, 0)  # the XZ slices

    def lateral_planes(self) -> list:
        """The clean examples: the volume's XY planes, as one stack."""
        return [self.volume[..., 0] if self.volume.shape[-1] == 1 else self.volume]

    def add(self, i: int, plane: np.ndarray, residual: np.ndarray) -> None:
        """Add the restored slice ``i`` of :attr:`slices` and its ``(Z, ·)`` map to the sums."""
        if i < self.h:
            self.sum[:, i] += plane
            self.residual[:, i] += residual
        else:
            self.sum[:, :, i - self.h] += plane
            self.residual[:, :, i - self.h] += residual

    def write(self, image, residual, scale: float, *, complete: bool) -> int:
        """Write the volume plane by plane: into ``image[k]`` the mean of each voxel's two
        estimates, into ``residual[k]`` the mean of its maps times ``scale``. A Stop while
        restoring (not ``complete``) writes nothing; returns the planes written."""
        from ..core.progress import StopRequested

        if not complete:  # a Stop while restoring: a half-restored volume is no result
            raise StopRequested("Stopped while restoring the axial slices; nothing was written.")
        for k in range(len(self.volume)):
            image[k] = self.sum[k] / 2
            residual[k] = self.residual[k] * (scale / 2)
        return len(self.volume)


class _Slices:
    """The first ``xz`` XZ slices, then the first ``yz`` YZ slices, of a ``(Z, H, W, C)`` volume,
    as planes ``(Z, ·, C)`` (the planes interface the unpaired sampler and the predictor read)."""

    def __init__(self, volume: np.ndarray, xz: int, yz: int):
        self.volume, self.xz, self.yz = volume, xz, yz
        self.c = volume.shape[-1]
        self.hw = (volume.shape[0], volume.shape[2] if xz else volume.shape[1])

    def __len__(self) -> int:
        return self.xz + self.yz

    def __getitem__(self, i: int) -> np.ndarray:
        v = self.volume
        return v[:, i] if i < self.xz else v[:, :, i - self.xz]

    def stack(self, indices) -> np.ndarray:
        return np.stack([self[i] for i in indices])
