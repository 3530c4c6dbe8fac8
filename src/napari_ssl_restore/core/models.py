"""Saving and loading trained networks: one file with weights, architecture, normalisation and
provenance, loadable without pickled code (``torch.load(weights_only=True)``)."""
from __future__ import annotations

import datetime
import os
from typing import Any

FORMAT = "napari-ssl-restore/model"
FORMAT_VERSION = 1


def _architectures() -> dict[str, Any]:
    from ..nets.unet import UNet

    return {"unet": UNet}


def checkpoint(net, *, architecture: str, normalization: dict, provenance: dict) -> dict:
    """A self-describing checkpoint dict for ``net`` (weights moved to the CPU)."""
    from .. import __version__

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "config": dict(net.config),
        "normalization": dict(normalization),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "provenance": dict(provenance, version=__version__,
                           saved=datetime.datetime.now(datetime.timezone.utc).isoformat(
                               timespec="seconds")),
    }


def save_model(ckpt: dict, path: str | os.PathLike) -> str:
    """Write a checkpoint to ``path`` (``.pt``); return the path written."""
    import torch

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"cannot save the model to {path!r}: folder {folder!r} does not exist.")
    torch.save(ckpt, path)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read and check a checkpoint written by :func:`save_model`."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} not found; train and save a model first "
                                "(save_model= / --save-model).")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        raise ValueError(f"{path}: not a napari-ssl-restore model ({type(exc).__name__}: {exc}).") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a napari-ssl-restore model file.")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: saved by a newer napari-ssl-restore; upgrade to load it.")
    if ckpt.get("architecture") not in _architectures():
        raise ValueError(f"{path}: unknown architecture {ckpt.get('architecture')!r}.")
    return ckpt


def build(ckpt: dict, device=None):
    """Instantiate the network of a checkpoint with its weights."""
    net = _architectures()[ckpt["architecture"]](**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device) if device is not None else net
