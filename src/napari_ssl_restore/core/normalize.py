"""Input checks, normalisation to float32 and the round trip back to the input's dtype and range."""
from __future__ import annotations

import dataclasses

import numpy as np

_SUPPORTED_KINDS = "uif"  # unsigned, signed integer, float; bool/complex/object are refused


def check_kind(data, *, name: str = "image") -> None:
    """Check that ``data`` (numpy, dask, zarr: anything with ``shape`` and ``dtype``) can be an
    image, without reading its values: refuses unsupported dtypes (bool, complex, object,
    strings), empty arrays and fewer than 2 dimensions, each with a message that says how to fix it.
    """
    if not (hasattr(data, "shape") and hasattr(data, "dtype")):
        raise TypeError(f"{name} must be an array (numpy, dask, zarr or a napari layer's data); got "
                        f"{type(data).__name__}.")
    dtype, shape = np.dtype(data.dtype), tuple(data.shape)
    if dtype.kind not in _SUPPORTED_KINDS:
        raise TypeError(
            f"{name} has dtype {dtype}, which is not an intensity image. Convert it to an integer "
            "or float type first (e.g. image.astype(np.float32))."
        )
    if int(np.prod(shape, dtype=np.int64)) == 0:
        raise ValueError(f"{name} is empty (shape {shape}); pick a layer that contains data.")
    if len(shape) < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (Y, X); got shape {shape}. Reshape a "
            "flattened image back to (rows, columns) first."
        )


def check_finite(n_bad: int, *, name: str = "image") -> None:
    """Refuse an image with ``n_bad`` NaN or infinite values."""
    if n_bad:
        raise ValueError(
            f"{name} contains {n_bad} NaN or infinite value(s). Replace them first, e.g. "
            "np.nan_to_num(image, nan=0.0), or crop them away."
        )


def check_image(data, *, name: str = "image") -> np.ndarray:
    """Return ``data`` as an ndarray after checking it is a usable image (small inputs: masks,
    PSFs, scribbles). Lazy arrays are read whole; the input is never modified."""
    if hasattr(data, "compute") and not isinstance(data, np.ndarray):  # dask
        data = data.compute()
    try:
        arr = np.asarray(data)
    except Exception as exc:  # noqa: BLE001 - anything that is not array-like
        raise TypeError(f"{name} must be an array (numpy, dask or a napari layer's data); got "
                        f"{type(data).__name__}: {exc}") from None
    check_kind(arr, name=name)
    if arr.dtype.kind == "f":
        check_finite(int(arr.size - np.count_nonzero(np.isfinite(arr))), name=name)
    return arr


@dataclasses.dataclass(frozen=True)
class Scaling:
    """An affine map ``unit = (x - offset) / scale`` and its inverse back to the input's dtype."""

    offset: float
    scale: float
    dtype: np.dtype

    def forward(self, data: np.ndarray) -> np.ndarray:
        if self.offset:
            out = np.subtract(data, np.float32(self.offset), dtype=np.float32)
            out *= np.float32(1.0 / self.scale)
            return out
        return np.multiply(data, np.float32(1.0 / self.scale), dtype=np.float32)

    @property
    def zero(self) -> float:
        """Where the input's zero lies in units (0 for a range scaling of non-negative data)."""
        return -self.offset / self.scale

    def inverse(self, unit: np.ndarray, *, as_float: bool = False) -> np.ndarray:
        """Map a unit-range result back; integer dtypes are rounded and clipped to their range."""
        out = np.multiply(unit, np.float32(self.scale), dtype=np.float32)
        if self.offset:
            out += np.float32(self.offset)
        if as_float or self.dtype.kind == "f":
            return out.astype(np.float32 if as_float else self.dtype, copy=False)
        info = np.iinfo(self.dtype)
        np.rint(out, out=out)
        np.clip(out, info.min, info.max, out=out)
        return out.astype(self.dtype)


def range_scaling(data: np.ndarray) -> Scaling:
    """A scale-only map to ``[0, 1]``, keeping zero at zero (for physical models such as haze).

    8-bit images use the dtype's range (so results match the usual photographic convention);
    everything else is divided by its maximum so 12-bit data in uint16 is not squashed near zero.
    """
    if data.dtype == np.uint8:
        return Scaling(0.0, 255.0, data.dtype)
    lo = float(data.min())
    if lo < 0:
        hi = float(data.max())
        return Scaling(lo, max(hi - lo, 1e-12), data.dtype)
    hi = float(data.max())
    return Scaling(0.0, hi if hi > 0 else 1.0, data.dtype)


def percentile_scaling(data: np.ndarray, low: float = 0.1, high: float = 99.9) -> Scaling:
    """Percentile normalisation (as in CARE/CSBDeep): ``low`` -> 0 and ``high`` -> 1.

    Robust to hot pixels and empty background; used to feed networks with a comparable range.
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got low={low}, high={high}.")
    lo, hi = np.percentile(data, [low, high])
    if hi - lo <= 0:
        hi = lo + 1.0
    return Scaling(float(lo), float(hi - lo), data.dtype)
