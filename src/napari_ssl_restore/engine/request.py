"""The one front door: every check a request needs before any work, written once.

:func:`napari_ssl_restore.api.prepare` (and through it ``restore``, the CLI's ``run`` and the napari
docks), :func:`napari_ssl_restore.batching.batch_steps` (``batch``, the docks' cluster runs) and the
CLI all hand their request to :func:`check_request`: the seed, the device name, the method's
parameters, its extra inputs — given as arrays, TIFF/zarr files, globs or folders of examples, or
keywords — and a model file. Errors name the bad value and the fix, and surface before anything
is read beyond what the check needs.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ..core.device import check_device_name
from ..core.params import validate
from ..core.registry import MethodSpec, get_method

__all__ = ["Request", "check_request", "check_seed", "check_model_file"]


@dataclasses.dataclass
class Request:
    """A checked request: everything but the image itself."""

    spec: MethodSpec
    params: Any
    """The method's validated ``Params``."""
    seed: int
    device: str
    """The checked device name (``"auto"``, ``"cpu"``, ``"cuda:1"`` ...), resolved to a torch device
    once per run by :attr:`RunContext.torch_device
    <napari_ssl_restore.core.registry.RunContext.torch_device>`."""
    extras: dict[str, Any]
    """Extra inputs read and checked: arrays, keyword strings, lists of example arrays."""
    like: dict[str, Any]
    """Second acquisitions of the image (``like_image`` inputs), opened lazily, not yet checked
    against the image's shape (:func:`napari_ssl_restore.api.prepare` does that)."""
    model_path: str = ""
    """The model file given as ``model=`` (empty: none, or the shipped one)."""


def check_seed(seed: Any) -> int:
    """A non-negative integer seed, or a clear error."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer; got {seed!r}.")
    return int(seed)


def check_model_file(spec: MethodSpec, path: Any) -> str:
    """``model=``: empty, an existing file, or a shipped model's name (its weights, checked against
    the manifest's sha256), for a method that takes one."""
    if not path:
        return ""
    if "model" not in {p.name for p in spec.param_info}:
        raise ValueError(f"{spec.name} takes no model; model= applies to dncnn, noise2noise "
                         "(mode='apply'), frame2frame, restore-from-restored and the unpaired "
                         "methods (mode='apply').")
    path = os.fspath(path)
    if not os.path.exists(path):
        from ..core.models import WEIGHTS_DIR, shipped_manifest, shipped_model

        entry = shipped_manifest().get(path)
        if entry is not None:
            shipped_model(path)  # verifies the sha256
            return os.path.join(WEIGHTS_DIR, entry["file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} not found; train and save a model first "
                                "(save_model= / --save-model).")
    return path


def _extra(inp, value, *, for_batch: bool):
    """One extra input read and checked (arrays, files, globs, keywords)."""
    from ..core.io import read_examples, read_image
    from ..core.normalize import check_image

    if isinstance(value, str) and value in inp.keywords:
        return value
    if inp.examples:
        examples = read_examples(value)
        return examples if for_batch else [np.array(v) for v in examples]
    if isinstance(value, (str, os.PathLike)):
        value = read_image(value)[0]
    if np.asarray(value).dtype == bool:
        return np.asarray(value).copy()
    return check_image(value, name=inp.name).copy()


def check_request(method: str | MethodSpec, params: dict[str, Any], *, seed: Any = 0,
                  device: Any = "auto", for_batch: bool = False) -> Request:
    """Check a request up front; ``params`` holds the method's parameters and extra inputs.

    Extra inputs are read here (a mask, a PSF, clean examples: small), except a second
    acquisition of the image, which is opened lazily like the image. ``for_batch``: the request is
    for :func:`~napari_ssl_restore.batching.batch`, which applies one set of extra inputs to every
    input and so cannot take a per-input second acquisition.
    """
    from .planes import open_array

    spec = method if isinstance(method, MethodSpec) else get_method(method)
    seed = check_seed(seed)
    device = check_device_name(device)
    kwargs = dict(params)
    extras: dict[str, Any] = {}
    like: dict[str, Any] = {}
    for inp in spec.inputs:
        value = kwargs.pop(inp.name, None)
        if value is None:
            if inp.required and not for_batch:
                raise ValueError(f"{spec.name} needs {inp.name}=: {inp.doc}")
            continue
        if inp.like_image:
            if for_batch:
                raise ValueError(
                    f"batch cannot pair each input with its own {inp.name}= "
                    f"({inp.doc.rstrip('.')}). Restore such pairs with `napari-ssl-restore run`; "
                    f"for {spec.name}, train once with save_model= and batch the rest with the "
                    "saved model.")
            like[inp.name] = open_array(value)[0]
            continue
        extras[inp.name] = _extra(inp, value, for_batch=for_batch)
    model_path = check_model_file(spec, kwargs.get("model"))
    spec_params = spec.make_params(**kwargs)
    validate(spec_params)
    if for_batch:
        missing = [i.name for i in spec.inputs if i.required and i.name not in extras]
        if missing:
            raise ValueError(f"{spec.name} needs {', '.join(missing)}=.")
    return Request(spec, spec_params, seed, device, extras, like, model_path)
