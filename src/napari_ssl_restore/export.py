"""Export a model of this plugin to the BioImage Model Zoo: a bioimage.io model zip of the current
specification (model format 0.5) that bioimage.io software runs and ``bioimageio test`` passes.

:func:`export_bioimageio` takes a checkpoint this plugin saved (``save_model=``), a shipped model's
name or ``""`` (the shipped denoiser), and writes one zip holding:

- **weights** twice: TorchScript (traced: deepImageJ, ilastik, Fiji and bioimageio.core run it with
  no Python code of ours) and a ``pytorch_state_dict`` whose architecture is a single source file
  in the zip (the network's module of :mod:`napari_ssl_restore.nets`, the noise map's function and
  :class:`~napari_ssl_restore.nets.portable.PortableNet`), so that it runs where only torch and
  numpy are installed;
- **test tensors** made by this plugin: one plane of ``sample`` (or a synthetic field suited to the
  model's task), cropped to the sizes the model takes, and the plugin's network applied to it as the
  methods apply it (a denoiser through :func:`~napari_ssl_restore.engine.video.wrap_denoiser`);
- **pre-processing** as the plugin normalises: the ``low``/``high`` percentiles of each image (all
  channels together) mapped to 0 and 1 (``scale_range``). The **output** stays in those units: the
  plugin maps it back with the input's percentiles, which no bioimage.io post-processing step can
  express (``scale_mean_variance`` would restore the noisy input's variance, undoing a denoiser), so
  the README says how to do it;
- axes ``(batch, channel, y, x)``; Y and X of any size ``min + n·step`` with ``step`` the network's
  size step (``2**depth`` for a U-Net, ``2**downs`` for the generators), the output ``zoom`` times
  larger for a super-resolution generator;
- the method's and the network's papers as citations, the licence (BSD-3-Clause), the authors, a
  generated README (what the model is, how it was trained, how to use it, how it was validated) and
  a cover image (the test input and output side by side);
- in ``config.napari_ssl_restore`` the checkpoint's architecture, normalisation and provenance, from
  which :func:`napari_ssl_restore.core.models.load_checkpoint` rebuilds the checkpoint: ``model=``
  accepts the zip wherever it accepts a ``.pt``.

A noise-aware denoiser (``config["noise_map"]``, after FFDNet) reads the noise level at each pixel
beside the image; the plugin measures the noise model on each image, bioimage.io software cannot.
The export measures it on the test input (:func:`~napari_ssl_restore.physics.estimate.noise_fit`)
and bakes it into the network, which then builds the map itself: the exported model assumes that
noise level (the README says so; loaded back into the plugin, the model measures each image again).

Needs ``bioimageio.spec`` (``pip install "napari-ssl-restore[bioimageio]"``). Specification:
https://bioimage.io (model format 0.5).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from typing import Any

import numpy as np

INSTALL_HINT = 'pip install "napari-ssl-restore[bioimageio]"'
AUTHORS = "napari-ssl-restore developers"
LICENSE = "BSD-3-Clause"
EPS = 1e-6
"""``scale_range``'s epsilon: ``(x - p_low) / (p_high - p_low + EPS)``, in the test tensors too."""
MAX_TEST_SIDE = 256
"""A sample larger than this is centre-cropped to it (the test tensors stay small)."""
SYNTHETIC_SIDE = 64
"""Side of the synthetic test input (rounded up to the model's size step)."""
MIN_SIDE = 16
"""Smallest input side declared (at least twice the size step)."""
AGREEMENT = 1e-4
"""Largest difference allowed between the traced network and the plugin's before packaging."""
NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")
"""What bioimage.io allows in a model's name (5 to 128 of them)."""

ARCHITECTURE_TITLES = {"unet": "U-Net", "dncnn": "DnCNN", "resnet-generator": "ResNet generator",
                       "content-deblurrer": "content deblurrer"}

# papers: (citation, DOI); arXiv DOIs where the venue has none
LEHTINEN = ("J. Lehtinen, J. Munkberg, J. Hasselgren, S. Laine, T. Karras, M. Aittala, T. Aila. "
            "Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018.",
            "10.48550/arXiv.1803.04189")
DNCNN = ("K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang. Beyond a Gaussian Denoiser: Residual "
         "Learning of Deep CNN for Image Denoising. IEEE TIP 26(7), 2017.", "10.1109/TIP.2017.2662206")
FFDNET = ("K. Zhang, W. Zuo, L. Zhang. FFDNet: Toward a Fast and Flexible Solution for CNN-Based "
          "Image Denoising. IEEE TIP 27(9), 2018.", "10.1109/TIP.2018.2839891")
EHRET = ("T. Ehret, A. Davy, J.-M. Morel, G. Facciolo, P. Arias. Model-blind Video Denoising Via "
         "Frame-to-frame Training. CVPR 2019.", "10.48550/arXiv.1811.12766")
LEE = ("S. Lee et al. Restore from Restored: Video Restoration with Pseudo Clean Video. CVPR 2021.",
       "10.48550/arXiv.2003.04279")
PAN = ("J. Pan et al. Physics-Based Generative Adversarial Models for Image Restoration and Beyond. "
       "IEEE TPAMI 43(7), 2021.", "10.48550/arXiv.1808.00605")
ENGIN = ("D. Engin, A. Genç, H. K. Ekenel. Cycle-Dehaze: Enhanced CycleGAN for Single Image "
         "Dehazing. CVPR Workshops 2018.", "10.48550/arXiv.1805.05308")
LU = ("B. Lu, J.-C. Chen, R. Chellappa. Unsupervised Domain-Specific Deblurring via Disentangled "
      "Representations. CVPR 2019.", "10.48550/arXiv.1903.01594")
ZHU = ("J.-Y. Zhu, T. Park, P. Isola, A. A. Efros. Unpaired Image-to-Image Translation using "
       "Cycle-Consistent Adversarial Networks. ICCV 2017.", "10.48550/arXiv.1703.10593")

METHOD_PAPERS: dict[str, list[tuple[str, str]]] = {
    "noise2noise": [LEHTINEN], "dncnn": [DNCNN], "frame2frame": [EHRET],
    "restore-from-restored": [LEE], "physics-gan": [PAN], "cycle-dehaze": [ENGIN],
    "disentangled-deblur": [LU]}
"""The paper of the method that trained a model (its provenance ``method``)."""
NETWORK_PAPERS: dict[str, list[tuple[str, str]]] = {
    "unet": [LEHTINEN], "dncnn": [DNCNN], "resnet-generator": [ZHU], "content-deblurrer": [LU]}
"""The paper of each architecture (the U-Net is Noise2Noise's)."""


@dataclasses.dataclass
class _Plan:
    """What the export needs to know of a checkpoint's network."""

    architecture: str
    network: str
    """Class name in :mod:`napari_ssl_restore.nets`."""
    channels: int
    """Image channels in (the noise map of a noise-aware network is not one of them)."""
    out_channels: int
    step: int
    """Y and X must be multiples of this."""
    min_side: int
    zoom: int
    noise_map: bool
    method: str
    """The method that trained it (provenance), or ``""``."""
    task: str
    """``denoise``, ``deblur``, ``dehaze``, ``deconv``, ``sr`` or ``restore``."""


def export_bioimageio(model, path: str | os.PathLike, sample=None, *, name: str | None = None,
                      axes: str | None = None, overwrite: bool = False) -> str:
    """Export a model of this plugin as a bioimage.io model zip (BioImage Model Zoo, format 0.5).

    Parameters
    ----------
    model : str, path or dict
        A ``.pt`` saved by this plugin (``save_model=``), a shipped model's name, ``""`` for the
        shipped denoiser, or a checkpoint dict (``restore(..., full_output=True)["model"]``).
    path : str or path
        The zip to write (``.zip``), through a temporary file renamed when complete.
    sample : array, str or path, optional
        An image (array, TIFF, zarr) whose middle plane, centre-cropped to at most 256² and to the
        model's size step, is the test input; default: a synthetic field suited to the model's task.
    name : str, optional
        The model's name on bioimage.io (5 to 128 letters, digits, spaces, ``_+-()``); default:
        from the method and the architecture.
    axes : str, optional
        Axes of ``sample`` (``"YX"``, ``"ZYX"``, ``"YXC"``...); default: its metadata's, else a
        guess from its shape.
    overwrite : bool
        Replace an existing ``path`` (otherwise refused).

    Returns
    -------
    str
        The absolute path of the zip written.

    Notes
    -----
    The zip's input is normalised as the plugin normalises (``scale_range``: the 0.1 and 99.9
    percentiles of each image to 0 and 1) and its output stays in those units; multiply by
    ``p99.9 - p0.1`` of the input and add ``p0.1`` to return to the input's units, as the plugin
    does. A noise-aware denoiser carries the noise model measured on the test input (the FFDNet
    noise map [3]_ built inside the network). Every zip cites the method's and the network's papers
    (e.g. [1]_, [2]_).

    References
    ----------
    .. [1] J. Lehtinen et al. Noise2Noise: Learning Image Restoration without Clean Data. ICML 2018.
    .. [2] K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang. Beyond a Gaussian Denoiser: Residual
           Learning of Deep CNN for Image Denoising. IEEE TIP 26(7), 2017.
    .. [3] K. Zhang, W. Zuo, L. Zhang. FFDNet: Toward a Fast and Flexible Solution for CNN-Based
           Image Denoising. IEEE TIP 27(9), 2018.

    Examples
    --------
    >>> from napari_ssl_restore import export_bioimageio, restore
    >>> from napari_ssl_restore.data import noisy_pair
    >>> s = noisy_pair(size=32, sigma=0.1)
    >>> _ = restore(s["image"], "noise2noise", target=s["target"], steps=2, patch_size=16,
    ...             features=8, depth=2, save_model="n2n.pt")  # doctest: +SKIP
    >>> export_bioimageio("n2n.pt", "n2n.zip")  # doctest: +SKIP
    '/.../n2n.zip'
    """
    from .core.io import atomic_paths, check_outputs

    bio = _bioimageio()
    path = os.fspath(path)
    if not path.lower().endswith(".zip"):
        raise ValueError(f"the bioimage.io model {path!r} must be a .zip file; give a name "
                         "ending in .zip.")
    inputs = [os.fspath(p) for p in (model, sample)
              if isinstance(p, (str, os.PathLike)) and os.path.isfile(p)]
    check_outputs([path], inputs=inputs, overwrite=overwrite)
    if name is not None:
        _check_name(name)
    ckpt = _checkpoint(model)

    import shutil
    import tempfile
    from pathlib import Path

    # the specification's advice (tags, maintainers' GitHub names...) is not logged, nor the
    # packager's notes on the files it finds before reading them from the zip it checks
    with tempfile.TemporaryDirectory(prefix="napari-ssl-restore-bioimageio-") as tmp, \
            bio.context().replace(log_warnings=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found mapping with 'source'")
        descr = _describe(bio, ckpt, model, sample, axes, name, tmp)
        with atomic_paths([path]) as (partial,):
            built = bio.save_package(descr, output_path=Path(tmp, "package.zip"))
            shutil.copyfile(built, partial)
    return os.path.abspath(path)


# --- the pieces ------------------------------------------------------------------------------------

class _Bioimageio:
    """``bioimageio.spec``'s model format 0.5 classes and its packager."""

    def __init__(self):
        from bioimageio.spec import get_validation_context, save_bioimageio_package
        from bioimageio.spec.model import v0_5

        self.v = v0_5
        self.save_package = save_bioimageio_package
        self.context = get_validation_context


def _bioimageio() -> _Bioimageio:
    try:
        bio = _Bioimageio()
    except ImportError as exc:
        raise ImportError(f"exporting to bioimage.io needs bioimageio.spec ({exc}); install it "
                          f"with {INSTALL_HINT}.") from None
    serializers_take_one_argument()
    return bio


# --- bioimageio.spec with a recent pydantic -------------------------------------------------------

class _NsrValueOnly:
    """pydantic's serializer handler as bioimageio.spec calls it, ``handler(value, info)``: recent
    pydantic-core takes an index key, not the info, as its second argument, and refuses one."""

    __slots__ = ("handler",)

    def __init__(self, handler):
        self.handler = handler

    def __call__(self, value, *_info):
        return self.handler(value)


def _value_only(value, handler, info):
    # the code given to each patched serializer: its names resolve in the serializer's module,
    # where serializers_take_one_argument puts the original function and the handler wrapper
    return _nsr_original(value, _NsrValueOnly(handler), info)  # type: ignore[name-defined]  # noqa: F821


def serializers_take_one_argument() -> list[str]:
    """Make bioimageio.spec's wrap serializers call pydantic's handler with the value alone.

    bioimageio.spec (0.5.12 and the versions before it) calls ``handler(value, info)`` in the
    serializers of its packaged files, its weights and its validated strings; pydantic-core 2.50
    reads that second argument as an index key and raises ``TypeError``, so that no model
    description with files can be validated, saved or tested. Each of those serializers gets code
    that calls the original with the handler wrapped so that it drops the info: what every pydantic
    accepts, so a release that calls it right is served as well. Idempotent; returns the
    serializers patched now. Applied when the export first uses bioimageio.spec (and so in the
    process that tests the zips), not to other processes."""
    import types

    from bioimageio.spec._internal import io_packaging, validated_string_with_inner_node
    from bioimageio.spec.model import v0_4

    found = [getattr(io_packaging, "package_file_descr_serializer", None),
             getattr(v0_4, "package_weights", None)]
    proxy = vars(validated_string_with_inner_node.ValidatedStringWithInnerNode).get("_serialize")
    found.append(getattr(proxy, "wrapped", proxy))
    patched = []
    for fn in found:
        code = getattr(fn, "__code__", None)
        if not isinstance(fn, types.FunctionType) or code is None or code.co_argcount != 3 \
                or code.co_freevars or "_nsr_original" in fn.__globals__:
            continue
        if "info" not in code.co_names + code.co_varnames or code.co_varnames[2] != "info":
            continue
        fn.__globals__["_nsr_original"] = types.FunctionType(code, fn.__globals__, fn.__name__,
                                                             fn.__defaults__)
        fn.__globals__["_NsrValueOnly"] = _NsrValueOnly
        fn.__code__ = _value_only.__code__
        patched.append(f"{fn.__module__}.{fn.__qualname__}")
    return patched


def _check_name(name: str) -> None:
    bad = sorted(set(name) - NAME_CHARACTERS)
    if bad or not 5 <= len(name) <= 128:
        raise ValueError(f"name {name!r} is not a valid bioimage.io model name: use 5 to 128 "
                         "letters, digits, spaces and _+-() only"
                         + (f" (not {' '.join(map(repr, bad))})." if bad else "."))


def _checkpoint(model) -> dict:
    from .core.models import ARCHITECTURES, FORMAT, model_named

    if isinstance(model, dict):
        if model.get("format") != FORMAT or model.get("architecture") not in ARCHITECTURES:
            raise ValueError("model is a dict but not a napari-ssl-restore checkpoint (give the "
                             "'model' that restore(..., full_output=True) returns, or a .pt).")
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a path, a shipped model's name or a checkpoint dict; got "
                        f"{type(model).__name__}.")
    return model_named(os.fspath(model))


def _plan(ckpt: dict, net) -> _Plan:
    from .core.models import ARCHITECTURES

    arch = ckpt["architecture"]
    cfg = ckpt["config"]
    prov = ckpt.get("provenance") or {}
    noise_map = bool(cfg.get("noise_map"))
    cin = int(cfg.get("in_channels", 1))
    if noise_map and cin != 1:
        raise ValueError("a noise-aware model must be single-channel; this one reads "
                         f"{cin} channels.")
    if arch == "unet":
        step = 2 ** int(net.depth)
    elif hasattr(net, "downs"):
        step = 2 ** int(net.downs)
    else:
        step = 1
    method = str(prov.get("method") or "")
    trained = prov.get("params") or {}
    if method == "cycle-dehaze" and trained.get("translation") == "physics" \
            and trained.get("pre_dcp"):
        raise ValueError("this Cycle-Dehaze model dehazes the Dark Channel Prior's recovery of "
                         "its input (pre_dcp=True), a step that other bioimage.io software does "
                         "not run; apply it with napari-ssl-restore (mode='apply', model=), or "
                         "train with pre_dcp=False to export.")
    task = "denoise" if arch in ("unet", "dncnn") else "deblur" if arch == "content-deblurrer" \
        else "dehaze" if method == "cycle-dehaze" \
        else str((prov.get("params") or {}).get("task", "restore"))
    return _Plan(architecture=arch, network=ARCHITECTURES[arch].split(":")[1], channels=cin,
                 out_channels=int(cfg.get("out_channels", cin)), step=step,
                 min_side=max(MIN_SIDE, 2 * step), zoom=int(getattr(net, "scale", 1)),
                 noise_map=noise_map, method=method, task=task)


def _fit(side: int, plan: _Plan, what: str) -> int:
    """The largest side a test input can have from ``side`` pixels (cropped)."""
    fitted = min(side, MAX_TEST_SIDE) // plan.step * plan.step
    if fitted < plan.min_side:
        raise ValueError(f"the {what} is {side} pixels on a side but the model takes at least "
                         f"{plan.min_side} (in steps of {plan.step}); give a larger sample.")
    return fitted


def _test_plane(sample, axes: str | None, plan: _Plan) -> np.ndarray:
    """The raw test input, ``(H, W, C)`` float32: the middle plane of ``sample`` centre-cropped
    to the sizes the model takes, or a synthetic field."""
    if sample is None:
        side = math.ceil(max(SYNTHETIC_SIDE, plan.min_side) / plan.step) * plan.step
        return _synthetic(plan.task, side, plan.channels)
    from .api import guess_axes
    from .engine.planes import Source, open_array

    arr, stated = open_array(sample)
    if not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
        arr = np.asarray(arr)
    rgb = plan.channels in (3, 4) and len(arr.shape) >= 3 and arr.shape[-1] == plan.channels
    source = Source(arr, (axes or stated or guess_axes(tuple(arr.shape), rgb=rgb)).upper(),
                    name="sample")
    if source.c != plan.channels:
        raise ValueError(f"the model reads {plan.channels} channel(s) but the sample has "
                         f"{source.c} (axes {source.layout.axes}); give a sample with "
                         f"{plan.channels} channel(s), or set axes.")
    plane = source.raw(source.n // 2).astype(np.float32)
    if not np.all(np.isfinite(plane)):
        raise ValueError("the sample contains NaN or infinite values; give a finite image.")
    h, w = (_fit(s, plan, "sample") for s in plane.shape[:2])
    y, x = (plane.shape[0] - h) // 2, (plane.shape[1] - w) // 2
    return np.ascontiguousarray(plane[y:y + h, x:x + w])


def _synthetic(task: str, side: int, channels: int) -> np.ndarray:
    """A synthetic fluorescence field degraded as the task's inputs are, ``(side, side, C)``."""
    from . import data

    planes = []
    for k in range(channels):
        if task == "dehaze":
            img = data.hazy_fields(n=1, size=side, examples=1, seed=k)["image"]
        elif task in ("deblur", "deconv", "sr", "restore"):
            img = data.blurred_cells(size=side, examples=1, seed=k)["image"]
        else:
            img = data.noisy_cells(size=side, sigma=0.1, seed=k)["image"]
        planes.append(np.asarray(img, np.float32).reshape(side, side))
    return np.stack(planes, -1)


def _percentiles(ckpt: dict) -> tuple[float, float]:
    norm = ckpt.get("normalization") or {}
    if norm.get("kind", "percentile") == "percentile":
        return float(norm.get("low", 0.1)), float(norm.get("high", 99.9))
    return 0.1, 99.9  # what every method applying a model uses (scaling="percentile")


def _normalised(plane: np.ndarray, low: float, high: float) -> np.ndarray:
    """``plane`` in the network's units as bioimage.io's ``scale_range`` makes them (the plugin's
    percentile normalisation, all channels together, with its epsilon)."""
    from .core.normalize import percentile_scaling

    scaling = percentile_scaling(plane, low, high)
    if np.percentile(plane, high) <= scaling.offset:  # (the plugin then divides by 1)
        raise ValueError(f"the sample's {low:g} and {high:g} percentiles coincide (a flat "
                         "image); give an image with structure.")
    return ((plane - np.float32(scaling.offset)) / np.float32(scaling.scale + EPS)).astype(
        np.float32)


def _noise_model(x: np.ndarray) -> list[float]:
    """``(a, b)`` of the noise variance ``a·u + b`` of normalised ``(H, W, 1)`` ``x``, measured as
    the plugin measures it for a noise-aware denoiser."""
    from .engine.predict import centre_crop
    from .engine.video import NOISE_CROP
    from .physics.estimate import channel_noise_models

    try:
        a, b = channel_noise_models([centre_crop(x, NOISE_CROP)])[0]
    except ValueError:
        raise ValueError(f"the test input ({x.shape[0]}x{x.shape[1]}) is too small to measure "
                         "the noise a noise-aware denoiser needs; give a larger sample.") from None
    return [float(a), float(b)]


def _as_plugin_applies(net, plan: _Plan, x, noise: list[float] | None):
    """The network applied as the methods apply it: denoisers through the video engine's wrapper
    (padding, the noise map), generators directly (they pad themselves)."""
    import torch

    module = net
    if plan.architecture in ("unet", "dncnn"):
        from .engine.video import wrap_denoiser

        module = wrap_denoiser(net, plan.channels, None if noise is None else np.array([noise]))
    with torch.no_grad():
        return module(x)


def _trace(portable, x, step: int, expected):
    """TorchScript of ``portable`` traced on ``x``, checked against the plugin's ``expected``
    output and against ``portable`` on a batch of two at another size."""
    import torch
    import torch.nn.functional as F

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's own notice
        traced = torch.jit.trace(portable, x, check_trace=False)
    bigger = F.pad(x, (0, step, 0, step), mode="reflect" if step < min(x.shape[-2:]) else
                   "replicate")
    bigger = torch.cat([bigger, bigger.flip(-1)])
    with torch.no_grad():
        checks = [(traced(x), expected), (traced(bigger), portable(bigger))]
    for got, want in checks:
        diff = float((got - want).abs().max()) if got.shape == want.shape else math.inf
        if not diff <= AGREEMENT * max(1.0, float(want.abs().max())):
            raise RuntimeError(f"the traced network disagrees with the plugin's (max difference "
                               f"{diff:.3g}, shapes {tuple(got.shape)} and {tuple(want.shape)}); "
                               "please report this.")
    return traced


def _describe(bio: _Bioimageio, ckpt: dict, model, sample, axes, name, tmp: str):
    """Every file of the zip written in ``tmp``, and the model description pointing at them."""
    from pathlib import Path

    import torch

    from .core.models import build
    from .nets.portable import PortableNet

    net = build(ckpt).eval()
    plan = _plan(ckpt, net)
    low, high = _percentiles(ckpt)
    raw = _test_plane(sample, axes, plan)
    x = _normalised(raw, low, high)
    noise = _noise_model(x) if plan.noise_map else None
    x_t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
    expected = _as_plugin_applies(net, plan, x_t, noise)
    portable = PortableNet(plan.network, dict(ckpt["config"]), noise)
    portable.net.load_state_dict(ckpt["state_dict"])
    portable.eval()
    traced = _trace(portable, x_t, plan.step, expected)

    files = {k: Path(tmp, v) for k, v in (
        ("input", "test_input.npy"), ("output", "test_output.npy"), ("weights", "weights.pt"),
        ("torchscript", "weights_torchscript.pt"), ("source", "napari_ssl_restore_network.py"),
        ("readme", "README.md"), ("cover", "cover.png"))}
    test_input = np.ascontiguousarray(raw.transpose(2, 0, 1)[None])
    test_output = expected.numpy().astype(np.float32)
    np.save(files["input"], test_input)
    np.save(files["output"], test_output)
    torch.save(portable.state_dict(), files["weights"])
    traced.save(str(files["torchscript"]))
    files["source"].write_text(architecture_source(ckpt["architecture"]), encoding="utf-8")
    title = name or _default_name(ckpt, plan)
    origin = "the shipped denoiser" if isinstance(model, str) and not model else \
        os.path.basename(os.fspath(model)) if isinstance(model, (str, os.PathLike)) else \
        "a checkpoint in memory"
    files["readme"].write_text(_readme(ckpt, plan, title, low, high, noise, test_input.shape,
                                       origin, sample is not None), encoding="utf-8")
    _cover(test_input[0], test_output[0], plan, files["cover"])
    return _model_descr(bio, ckpt, plan, title, low, high, noise, files)


def _default_name(ckpt: dict, plan: _Plan) -> str:
    prov = ckpt.get("provenance") or {}
    if prov.get("shipped"):
        text = f"napari-ssl-restore shipped denoiser {prov['shipped']}"
    else:
        text = f"{_method_title(plan.method)} {ARCHITECTURE_TITLES[plan.architecture]}"
        text += " (napari-ssl-restore)"
    text = " ".join("".join(ch if ch in NAME_CHARACTERS else " " for ch in text).split())
    return text[:64]


def _method_title(method: str) -> str:
    from .core.registry import METHODS, get_method

    if method in METHODS:
        return str(getattr(get_method(method).params, "method_title", method))
    return method or "napari-ssl-restore"


def _apply_with(ckpt: dict, plan: _Plan) -> tuple[str, dict]:
    """How the plugin applies the model: the method and its settings besides ``model``."""
    if plan.architecture in ("unet", "dncnn"):
        return "dncnn", {}
    params = (ckpt.get("provenance") or {}).get("params") or {}
    extra: dict[str, Any] = {"mode": "apply"}
    if plan.method == "physics-gan":
        extra["task"] = params.get("task", "deconv")
        if extra["task"] == "sr":
            extra["sr_factor"] = plan.zoom
    return plan.method or "physics-gan", extra


# --- the architecture's source file ----------------------------------------------------------------

def architecture_source(architecture: str) -> str:
    """The single, torch-and-numpy-only source file of an exported zip's ``pytorch_state_dict``
    architecture: the network's module of :mod:`napari_ssl_restore.nets`, the noise map's function
    (:func:`~napari_ssl_restore.physics.noise.noise_std_map`) and
    :mod:`~napari_ssl_restore.nets.portable`, their ``from __future__`` and relative imports left
    out (what they import is in the file)."""
    import importlib
    import inspect

    from . import __version__
    from .core.models import ARCHITECTURES
    from .nets import portable
    from .physics.noise import noise_std_map

    network = importlib.import_module(ARCHITECTURES[architecture].split(":")[0])
    parts = [
        f'"""The network of a model exported by napari-ssl-restore {__version__} to bioimage.io '
        "(its pytorch_state_dict\narchitecture: PortableNet). Generated from the package's own "
        "sources; needs only torch and numpy.\nLicence: BSD-3-Clause (napari-ssl-restore "
        'developers)."""',
        "from __future__ import annotations", "", "import numpy as np",
    ]
    sections = [(network.__name__, _without_local_imports(inspect.getsource(network))),
                (f"{noise_std_map.__module__}.noise_std_map", inspect.getsource(noise_std_map)),
                (portable.__name__, _without_local_imports(inspect.getsource(portable)))]
    for where, text in sections:
        parts += ["", "", f"# --- from {where} " + "-" * max(4, 90 - len(where)), "", text.strip()]
    source = "\n".join(parts) + "\n"
    compile(source, "napari_ssl_restore_network.py", "exec")
    return source


def _without_local_imports(source: str) -> str:
    """``source`` without its ``from __future__`` and relative imports (refusing any other import
    than torch's and numpy's, which the file could not satisfy)."""
    import ast

    lines = source.splitlines()
    drop: set[int] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and (node.level or node.module == "__future__"):
            drop.update(range(node.lineno - 1, node.end_lineno or node.lineno))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            roots = {(node.module or "").split(".")[0]} if isinstance(node, ast.ImportFrom) else \
                {a.name.split(".")[0] for a in node.names}
            if not roots <= {"torch", "numpy"}:
                raise RuntimeError(f"the exported network cannot import {sorted(roots)}: the "
                                   "nets modules may import torch and numpy only.")
    return "\n".join(line for i, line in enumerate(lines) if i not in drop)


# --- the description, the README and the cover -----------------------------------------------------

def _plain(value):
    """``value`` as YAML-safe plain data (non-finite numbers as None, others as text)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return str(value)


def _citations(plan: _Plan) -> list[tuple[str, str]]:
    papers = METHOD_PAPERS.get(plan.method, []) + NETWORK_PAPERS[plan.architecture]
    if plan.noise_map:
        papers.append(FFDNET)
    seen: list[tuple[str, str]] = []
    for paper in papers:
        if paper not in seen:
            seen.append(paper)
    return seen


def _model_descr(bio: _Bioimageio, ckpt, plan: _Plan, title: str, low, high, noise, files):
    import torch

    from . import __version__

    v = bio.v
    torch_version = v.Version(torch.__version__.split("+")[0])
    channels = ["intensity"] if plan.channels == 1 else [f"channel{k}"
                                                         for k in range(plan.channels)]
    out_channels = ["restored"] if plan.out_channels == 1 else [f"restored{k}" for k in
                                                                range(plan.out_channels)]
    space = [v.AxisId("y"), v.AxisId("x")]
    size = v.ParameterizedSize(min=plan.min_side, step=plan.step)
    inp = v.InputTensorDescr(
        id=v.TensorId("input"),
        description=f"2-D image(s), {plan.channels} channel(s); Y and X: {plan.min_side} + "
                    f"n*{plan.step} pixels",
        axes=[v.BatchAxis(), v.ChannelAxis(channel_names=channels),
              *(v.SpaceInputAxis(id=a, size=size) for a in space)],
        test_tensor=v.FileDescr(source=files["input"]),
        data=v.IntervalOrRatioDataDescr(type="float32"),
        preprocessing=[
            v.EnsureDtypeDescr(kwargs=v.EnsureDtypeKwargs(dtype="float32")),
            v.ScaleRangeDescr(kwargs=v.ScaleRangeKwargs(
                axes=[v.AxisId("channel"), *space], min_percentile=low, max_percentile=high,
                eps=EPS))])
    out = v.OutputTensorDescr(
        id=v.TensorId("output"),
        description=f"restored image in normalised units (input p{low:g} -> 0, p{high:g} -> 1)"
                    + (f", {plan.zoom}x finer" if plan.zoom > 1 else ""),
        axes=[v.BatchAxis(), v.ChannelAxis(channel_names=out_channels),
              *(v.SpaceOutputAxis(id=a, size=v.SizeReference(tensor_id=v.TensorId("input"),
                                                             axis_id=a), scale=1.0 / plan.zoom)
                for a in space)],
        test_tensor=v.FileDescr(source=files["output"]),
        data=v.IntervalOrRatioDataDescr(type="float32"))
    kwargs = {"network": plan.network, "config": _plain(dict(ckpt["config"])),
              "noise": noise}
    weights = v.WeightsDescr(
        pytorch_state_dict=v.PytorchStateDictWeightsDescr(
            source=files["weights"], pytorch_version=torch_version,
            architecture=v.ArchitectureFromFileDescr(
                source=files["source"], callable=v.Identifier("PortableNet"), kwargs=kwargs),
            comment="PortableNet: the network as the plugin applies it (see README)"),
        torchscript=v.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=torch_version,
            parent="pytorch_state_dict", comment="traced from the pytorch_state_dict weights"))
    tags = ["napari-ssl-restore", "pytorch", "2d", "fluorescence-light-microscopy",
            "denoising" if plan.task == "denoise" else "image-restoration",
            {"unet": "unet", "dncnn": "dncnn"}.get(plan.architecture, "resnet")]
    if plan.method in ("noise2noise", "frame2frame", "restore-from-restored"):
        tags.append("self-supervised")
    elif plan.architecture in ("resnet-generator", "content-deblurrer"):
        tags.append("unpaired")
    if plan.method and plan.method not in tags:
        tags.append(plan.method)
    method, extra = _apply_with(ckpt, plan)
    ours = {"architecture": plan.architecture, "normalization": _plain(
        dict(ckpt.get("normalization") or {})), "provenance": _plain(
        dict(ckpt.get("provenance") or {})), "exported_by": f"napari-ssl-restore {__version__}",
        "apply_with": {"method": method, **extra}, "noise_model": None if noise is None else
        {"a": noise[0], "b": noise[1], "units": "normalised"}}
    return v.ModelDescr(
        name=title,
        description=_description(ckpt, plan, low, high, noise),
        authors=[v.Author(name=AUTHORS)],
        cite=[v.CiteEntry(text=text, doi=v.Doi(doi)) for text, doi in _citations(plan)],
        license=v.LicenseId(LICENSE),
        documentation=v.FileDescr(source=files["readme"]),
        covers=[v.FileDescr(source=files["cover"])],
        inputs=[inp], outputs=[out], weights=weights, tags=tags,
        config=v.Config(**{"napari_ssl_restore": ours}))


def _task_words(plan: _Plan) -> str:
    return {"denoise": "denoiser", "deblur": "deblurring network", "dehaze": "dehazing network",
            "deconv": "deconvolution network", "sr": f"x{plan.zoom} super-resolution network"}.get(
        plan.task, "restoration network")


def _description(ckpt: dict, plan: _Plan, low, high, noise) -> str:
    shipped = (ckpt.get("provenance") or {}).get("shipped")
    origin = f"shipped with napari-ssl-restore ({shipped})" if shipped else \
        f"trained with {_method_title(plan.method)} in napari-ssl-restore"
    text = (f"A {ARCHITECTURE_TITLES[plan.architecture]} {_task_words(plan)} for 2-D microscopy "
            f"images, {origin}. Input: percentiles {low:g}/{high:g} mapped to 0/1; output in "
            "those units.")
    if noise is not None:
        text += " Noise-aware: assumes the noise level measured on its test image."
    return text


def _readme(ckpt: dict, plan: _Plan, title: str, low, high, noise, shape, origin: str,
            sampled: bool) -> str:
    from . import __version__

    prov = dict(ckpt.get("provenance") or {})
    method, extra = _apply_with(ckpt, plan)
    settings = "".join(f", {k}={v!r}" for k, v in extra.items())
    flags = "".join(f" --{k.replace('_', '-')} {v}" for k, v in extra.items())
    arch = ARCHITECTURE_TITLES[plan.architecture]
    lines = [
        f"# {title}", "",
        f"A {arch} {_task_words(plan)} for 2-D microscopy images, exported by napari-ssl-restore "
        f"{__version__} (self-supervised image restoration for napari) from "
        + (f"its shipped model `{prov['shipped']}`." if prov.get("shipped") else
           f"a model trained with **{_method_title(plan.method)}**."), "",
        "## The network", "",
        f"- architecture: `{plan.architecture}` ({plan.network}), configuration "
        f"`{json.dumps(_plain(ckpt['config']))}`",
        f"- input: `(batch, channel, y, x)`, {plan.channels} channel(s), float32; Y and X of "
        f"{plan.min_side} + n·{plan.step} pixels (pad or crop other sizes)",
        f"- output: `(batch, channel, y, x)`, {plan.out_channels} channel(s)"
        + (f", {plan.zoom}x the input's size" if plan.zoom > 1 else ", the input's size"),
        "",
        "## Normalisation", "",
        f"Pre-processing (`scale_range`, as napari-ssl-restore normalises): the {low:g} and "
        f"{high:g} percentiles of each image, all channels together, are mapped to 0 and 1. The "
        "output is in those **normalised units**: to return to the input's intensities, multiply "
        f"by `p{high:g} - p{low:g}` of the input and add `p{low:g}`, as napari-ssl-restore does. "
        "(No bioimage.io post-processing step maps back with the input's percentiles; "
        "`scale_mean_variance` would give a denoised image the noisy input's variance.)", "",
    ]
    if noise is not None:
        a, b = noise
        lines += [
            "## Noise level (noise-aware model)", "",
            "This network reads the noise standard deviation at each pixel beside the image "
            "(FFDNet's noise map). napari-ssl-restore measures the noise model on every image; "
            "this export measured it once, on its test image, and the network builds the map "
            f"from it: variance `a·u + b` with a = {a:.6g}, b = {b:.6g} in normalised units "
            f"(σ = {math.sqrt(max(b, 0.0)):.4g} where u = 0). **The exported model assumes that "
            "noise level**: for data with other noise, export again with a representative "
            "`sample`, or apply the model in napari-ssl-restore (which measures each image).", ""]
    lines += ["## Training (provenance)", ""]
    for key in ("method", "shipped", "started_from", "steps", "trained_steps", "seed", "saved",
                "version", "sha256", "train_device", "train_seconds", "held_out_psnr",
                "best_step", "stop_rule"):
        if prov.get(key) not in (None, "", {}, []):
            lines.append(f"- {key.replace('_', ' ')}: `{json.dumps(_plain(prov[key]))}`")
    for key in ("params", "recipe"):
        if isinstance(prov.get(key), dict):
            lines += ["", f"{'Training settings' if key == 'params' else 'Recipe'}:", "",
                      "```json", json.dumps(_plain(prov[key]), indent=1, sort_keys=True), "```"]
    lines += [
        "", f"Exported from {origin}.", "",
        "## How to use it", "",
        "- Any bioimage.io software (deepImageJ, ilastik, Fiji, bioimageio.core) runs the "
        "TorchScript weights; the `pytorch_state_dict` weights need only torch and numpy "
        "(the architecture is `napari_ssl_restore_network.py` in this zip).",
        "- In Python with bioimageio.core: `bioimageio.core.predict(model=\"<this zip>\", "
        "inputs=image[None, None])` (a 2-D grey image as batch and channel of one).",
        f"- In napari-ssl-restore: `restore(image, \"{method}\", model=\"<this zip>\"{settings})`"
        f", or `napari-ssl-restore run {method} INPUT.tif -o OUTPUT.tif --model <this zip>"
        f"{flags}`, or the {method} dock's model field: the zip loads back as the model it was "
        "exported from, and the result is mapped back to the input's units.", "",
        "## Validation", "",
        f"The test input ({shape[-2]}x{shape[-1]} pixels) is "
        + ("one plane of the image given to the export" if sampled else
           f"a synthetic fluorescence field made for the {plan.task} task")
        + "; the test output is what napari-ssl-restore's network gives for it (normalised units)."
        " `bioimageio test <this zip>` reproduces it with both weight formats. Self-supervised "
        "restoration has no ground truth here: judge results on your data by the residual "
        "(input − output should look like noise only) and, where possible, against a clean "
        "reference of the same kind.", "",
        "## Citations", "",
        *(f"- {text} doi:{doi}" for text, doi in _citations(plan)), "",
        f"Licence: {LICENSE}. Authors: {AUTHORS}.", ""]
    return "\n".join(lines)


def _cover(test_input: np.ndarray, test_output: np.ndarray, plan: _Plan, path) -> None:
    """The test input and output side by side (PNG, 2:1, ~600x300)."""
    from matplotlib.figure import Figure

    def shown(img: np.ndarray) -> tuple[np.ndarray, dict]:
        if img.shape[0] in (3, 4):
            rgb = np.moveaxis(img[:3], 0, -1)
            lo, hi = np.percentile(rgb, [0.1, 99.9])
            return np.clip((rgb - lo) / max(hi - lo, 1e-12), 0, 1), {}
        lo, hi = np.percentile(img[0], [0.1, 99.9])
        return img[0], {"cmap": "gray", "vmin": lo, "vmax": max(hi, lo + 1e-12)}

    fig = Figure(figsize=(6, 3), dpi=100)
    axs = fig.subplots(1, 2)
    for ax, img, label in ((axs[0], test_input, "input"),
                           (axs[1], test_output, f"{_method_title(plan.method)} output")):
        data, kw = shown(img)
        ax.imshow(data, interpolation="nearest", **kw)
        ax.set_title(label, fontsize=10)
        ax.set_axis_off()
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.9, wspace=0.04)
    fig.savefig(path, format="png")
