"""Saving and loading trained networks: one file with weights, architecture, normalisation and
provenance, loadable without pickled code (``torch.load(weights_only=True)``). A bioimage.io model
zip that this plugin exported (:func:`napari_ssl_restore.export.export_bioimageio`) loads as the
checkpoint it was made from."""
from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
from typing import Any

FORMAT = "napari-ssl-restore/model"
FORMAT_VERSION = 1
BIOIMAGEIO_KEY = "napari_ssl_restore"
"""This plugin's entry in the ``config`` of a bioimage.io model it exported: the architecture's
name, the normalisation and the provenance of the checkpoint the zip was made from."""
BIOIMAGEIO_YAML_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")
"""Names of a bioimage.io model's description in its zip (or ``*.bioimageio.yaml``)."""
PORTABLE_PREFIX = "net."
"""Prefix of the network's weights in an exported zip's ``pytorch_state_dict`` weights (the network
is the ``net`` of a :class:`~napari_ssl_restore.nets.portable.PortableNet`)."""
SHIPPED_DENOISER = "unet-noise-aware-gray-v3"
"""Name of the default pretrained denoiser shipped in ``weights/`` (see
``scripts/train_denoiser.py``): the noise-aware residual U-Net fine-tuned with sharp-edged
(dead-leaves) images, then with each patch's error weighed relative to its noise
(``--loss-power 2``); the earlier defaults (``"unet-noise-aware-gray-v2"``, before the weighing;
``"unet-noise-aware-gray"``, before the dead leaves) and the first release's blind DnCNN
(``"dncnn-blind-gray"``) stay available by name."""
WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")


ARCHITECTURES: dict[str, str] = {
    "unet": "napari_ssl_restore.nets.unet:UNet",
    "dncnn": "napari_ssl_restore.nets.dncnn:DnCNN",
    "resnet-generator": "napari_ssl_restore.nets.gan:ResnetGenerator",
    "content-deblurrer": "napari_ssl_restore.nets.gan:ContentDeblurrer",
}
"""Networks a checkpoint can hold: name -> ``module:class``, an ``nn.Module`` whose ``config``
rebuilds it (``cls(**config)``). Every name the code saves under, and only those, is listed here
(tests/test_registry_lists.py checks both ways)."""


def network_class(name: str) -> Any:
    """The network class saved as ``name`` (imports torch)."""
    import importlib

    module, cls = ARCHITECTURES[name].split(":")
    return getattr(importlib.import_module(module), cls)


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
                           saved=datetime.datetime.now(datetime.UTC).isoformat(
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
    """Read and check a checkpoint written by :func:`save_model`, or rebuild one from a bioimage.io
    model zip this plugin exported (its ``pytorch_state_dict`` weights and its ``config``); a zip
    of another origin is refused, naming the tools that run it.

    A process reads each file once (while its size and modification time stay the same): a batch
    worker restoring many files with one model loads it once. The dict returned is the caller's
    own; the weight tensors in it are shared and must not be modified in place.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} not found; train and save a model first "
                                "(save_model= / --save-model).")
    st = os.stat(path)
    return dict(_read_checkpoint(os.path.abspath(path), st.st_size, st.st_mtime_ns))


def checkpoint_reads() -> int:
    """How many times this process has read a model file from disk (see :func:`load_checkpoint`)."""
    return _read_checkpoint.cache_info().misses


@functools.lru_cache(maxsize=8)
def _read_checkpoint(path: str, _size: int, _mtime_ns: int) -> dict:
    import torch

    rdf = bioimageio_description(path)
    if rdf is not None:
        ckpt = _from_bioimageio(path, rdf)
    else:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
            raise ValueError(f"{path}: not a napari-ssl-restore model ({type(exc).__name__}: "
                             f"{exc}).") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a napari-ssl-restore model file.")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: saved by a newer napari-ssl-restore; upgrade to load it.")
    if ckpt.get("architecture") not in ARCHITECTURES:
        raise ValueError(f"{path}: unknown architecture {ckpt.get('architecture')!r}.")
    return ckpt


def bioimageio_description(path: str | os.PathLike) -> dict | None:
    """The model description (``rdf.yaml``) of a bioimage.io model zip at ``path``, or ``None``
    when ``path`` is not one (a ``.pt`` saved by torch is a zip too, without a description)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return None
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if "/" not in n]
        found = [n for n in BIOIMAGEIO_YAML_NAMES if n in names] or \
            [n for n in names if n.endswith(".bioimageio.yaml")]
        if not found:
            return None
        import yaml

        try:
            rdf = yaml.safe_load(z.read(found[0]))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: its bioimage.io description {found[0]} is not valid "
                             f"YAML ({exc}).") from None
    if not isinstance(rdf, dict):
        raise ValueError(f"{path}: its bioimage.io description {found[0]} is not a mapping.")
    return rdf


def _from_bioimageio(path: str, rdf: dict) -> dict:
    """The checkpoint a bioimage.io zip exported by this plugin was made from: the network's
    weights from its ``pytorch_state_dict`` entry (sha256 checked), its architecture, config,
    normalisation and provenance from the description."""
    import io
    import zipfile

    import torch

    ours = (rdf.get("config") or {}).get(BIOIMAGEIO_KEY)
    weights = rdf.get("weights") or {}
    entry = weights.get("pytorch_state_dict") or {}
    if not isinstance(ours, dict) or not isinstance(entry, dict):
        kinds = ", ".join(weights) or "none"
        raise ValueError(
            f"{path} is a bioimage.io model ({rdf.get('name', 'unnamed')!r}; weights: {kinds}) that "
            "napari-ssl-restore did not export, so its architecture is not one of this plugin's "
            f"({', '.join(ARCHITECTURES)}). Run it with bioimage.io software (bioimageio.core, "
            "deepImageJ, ilastik), or give a model this plugin saved or exported.")
    source = str(entry.get("source", ""))
    kwargs = (entry.get("architecture") or {}).get("kwargs") or {}
    with zipfile.ZipFile(path) as z:
        if source not in z.namelist():
            raise ValueError(f"{path}: its pytorch_state_dict weights {source!r} are missing from "
                             "the zip; export the model again.")
        data = z.read(source)
    expected = entry.get("sha256")
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"{path}: the weights {source!r} do not match their sha256 in the "
                         "description (the zip is corrupt); export the model again.")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        raise ValueError(f"{path}: its weights {source!r} cannot be read ({type(exc).__name__}: "
                         f"{exc}).") from None
    n = len(PORTABLE_PREFIX)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": ours.get("architecture"),
        "config": dict(kwargs.get("config") or {}),
        "normalization": dict(ours.get("normalization") or {}),
        "state_dict": {k[n:]: v for k, v in state.items() if k.startswith(PORTABLE_PREFIX)},
        "provenance": dict(ours.get("provenance") or {}, bioimageio=os.path.basename(path)),
    }


def build(ckpt: dict, device=None):
    """Instantiate the network of a checkpoint with its weights."""
    net = network_class(ckpt["architecture"])(**ckpt["config"])
    net.load_state_dict(ckpt["state_dict"])
    return net.to(device) if device is not None else net


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _cached_sha256(path: str, _size: int, _mtime_ns: int) -> str:
    return sha256_file(path)


def shipped_manifest() -> dict:
    """The shipped weights' manifest: file name, sha256, architecture and training recipe."""
    path = os.path.join(WEIGHTS_DIR, "manifest.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: the installation is incomplete; reinstall "
                                "napari-ssl-restore.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def model_named(model: str) -> dict:
    """The checkpoint a user names: ``""`` for the shipped denoiser, a shipped model's name (the
    manifest's keys, e.g. an earlier release's), or a path to a file saved by this plugin (``.pt``)
    or to a bioimage.io model zip it exported."""
    if not model:
        return shipped_model()
    if not os.path.exists(model) and model in shipped_manifest():
        return shipped_model(model)
    return load_checkpoint(model)


def shipped_model(name: str = SHIPPED_DENOISER) -> dict:
    """Load a shipped pretrained model after checking its sha256 against the manifest."""
    manifest = shipped_manifest()
    if name not in manifest:
        raise ValueError(f"no shipped model named {name!r}; shipped: {', '.join(manifest)}.")
    entry = manifest[name]
    path = os.path.join(WEIGHTS_DIR, entry["file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"shipped weights {path!r} are missing; reinstall "
                                "napari-ssl-restore.")
    st = os.stat(path)
    digest = _cached_sha256(path, st.st_size, st.st_mtime_ns)
    if digest != entry["sha256"]:
        raise ValueError(f"shipped weights {path!r} are corrupt: sha256 {digest} does not match "
                         f"the manifest's {entry['sha256']}; reinstall napari-ssl-restore.")
    ckpt = load_checkpoint(path)
    ckpt["provenance"] = dict(ckpt.get("provenance", {}), shipped=name, sha256=digest)
    return ckpt
