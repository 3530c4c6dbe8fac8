"""The method registry: one :class:`MethodSpec` per method drives the API, CLI, widgets and docs.

Adding a method is adding one module under ``methods/`` that defines ``SPEC`` and one line in
:data:`METHODS`. Modules are imported lazily so that ``import napari_ssl_restore`` stays fast and does
not import torch; what the package needs before that (the public function names) is written here.
"""
from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .params import ParamInfo, describe

if TYPE_CHECKING:  # the package imports the registry: keep that import free of numpy too
    import numpy as np

# name -> public skimage-style function. The only list of methods in the project: the package's
# exports, napari.yaml, the tests' tiny settings and the README table are checked against it
# (tests/test_registry_lists.py). Each lives in ``methods/<name with _ for ->.py`` as ``SPEC``.
METHODS: dict[str, str] = {
    "dcp": "dehaze_dcp",
    "dip": "restore_dip",
    "noise2noise": "denoise_noise2noise",
    "double-dip": "decompose_double_dip",
    "dncnn": "denoise_dncnn",
    "frame2frame": "denoise_frame2frame",
    "restore-from-restored": "denoise_restore_from_restored",
    "physics-gan": "restore_physics_gan",
    "cycle-dehaze": "dehaze_cycle",
    "disentangled-deblur": "deblur_disentangled",
    "richardson-lucy": "deconvolve_richardson_lucy",
    "classic-denoise": "denoise_classic",
}

METHOD_MODULES: dict[str, str] = {
    name: f"napari_ssl_restore.methods.{name.replace('-', '_')}" for name in METHODS}
"""name -> module defining ``SPEC``."""

PUBLIC_FUNCTIONS: dict[str, str] = {METHODS[name]: module for name, module in METHOD_MODULES.items()}
"""public function name -> the module defining it (what ``napari_ssl_restore`` exports lazily)."""


@dataclasses.dataclass(frozen=True)
class ExtraInput:
    """An additional array a method takes (``mask=``, ``psf=``, ``target=`` ...)."""

    name: str
    doc: str
    required: bool = False
    layer_kind: str = "image"
    """What the widget offers for it: ``"image"``, ``"labels"`` or ``"mask"`` (Labels or Shapes)."""
    like_image: bool = False
    """A second acquisition of the image itself (``target=``): it must have the image's shape and is
    given to the method in the same canonical layout and normalisation as the image."""
    examples: bool = False
    """A set of example images of any sizes (``clean=``): an array, a list of arrays, or a file,
    glob or folder of TIFFs; the method receives a list of arrays."""
    keywords: tuple[str, ...] = ()
    """Words that stand for the input and reach the method as they are (``clean='lateral'``); the
    widget offers them beside the layers."""
    when: tuple[tuple[str, tuple], ...] = ()
    """Settings under which it is used, e.g. ``(("task", ("inpaint",)),)``; the widget shows it only
    then."""

    def applies(self, settings: Mapping[str, Any]) -> bool:
        return all(k not in settings or settings[k] in v for k, v in self.when)


@dataclasses.dataclass(frozen=True)
class Output:
    """A named result of a method.

    ``kind`` says how it returns to the caller:

    - ``"image"``: canonical ``...YXC`` float in the normalised range; returned in the input's axes,
      dtype and range (float32 on request).
    - ``"map"``: canonical ``...YX`` float map (transmission, soft mask), returned as float32 in the
      input's axes without C.
    - ``"labels"``: like ``"map"`` but integer labels (an ``int32`` Labels layer in napari).
    - ``"value"``: any array in the input's intensity units (e.g. the airlight); returned as float32.
    """

    name: str
    doc: str
    kind: str = "image"
    layer: bool = True
    """Whether the napari widget adds it as a layer."""


@dataclasses.dataclass
class MethodResult:
    """What a method generator returns: named outputs plus extra provenance (e.g. stop iteration).

    ``info["caveats"]``, where a method sets it, is a list of sentences about its own run (e.g.
    Noise2Noise ending on its time budget) that the run's quality verdict ends with."""

    outputs: dict[str, np.ndarray]
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Non-array results handed back as they are (e.g. a trained ``"model"`` checkpoint)."""
    primary: str | None = None
    """Name of the output :func:`restore` returns when it depends on the task (default: the first)."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    """Run settings every method receives alongside its image and parameters."""

    device: str = "auto"
    seed: int = 0
    axes: str = "YXC"
    """Canonical axes of the image the method receives (present axes of ``TZYXC``, C always)."""
    scale: float = 1.0
    """Intensity units per normalised unit, to report values such as the airlight in input units."""
    offset: float = 0.0
    previews: bool = True
    """Whether anyone shows previews (the widget, a progress callback); when not, methods make none
    (a video's whole-movie preview would hold the movie in memory)."""

    @functools.cached_property
    def torch_device(self):
        """The ``torch.device`` for :attr:`device`, resolved once per run, on first use (so
        closed-form methods never import torch): ``"auto"`` picks CUDA, then MPS, then the CPU."""
        from .device import resolve_device

        return resolve_device(self.device)


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """Everything the front ends need to know about a method."""

    name: str
    title: str
    task: str
    params: type
    run: Callable[..., Any]
    """Generator ``run(planes, params, ctx, out, **extra_inputs)`` yielding Steps and returning a
    MethodResult: ``planes`` are the image's lazy normalised planes
    (:class:`~napari_ssl_restore.engine.planes.Planes`), ``out`` the preallocated per-plane outputs
    (``out["image"][i] = plane``); whole values (an airlight) and provenance go in the result."""
    function: str
    outputs: tuple[Output, ...]
    inputs: tuple[ExtraInput, ...] = ()
    video: bool = False
    scaling: str = "range"
    """``"range"`` (scale only, zero kept: physical models) or ``"percentile"`` (networks)."""
    uses_torch: bool = False
    demo: Callable[[], list[Mapping[str, Any]]] | None = None
    """Returns samples ``{"image", "axes", "name", "params", ["clean"], **extra_inputs}`` for
    ``demo``."""
    primary_of: Callable[[Any], str] | None = None
    """The name of the primary output for given ``Params`` when it depends on them (the task)."""

    linked_planes: Callable[[Any], str] | None = None
    """For given ``Params``, a sentence saying how a plane's result depends on the other planes
    (a network trained on the whole stack, fits warm-started from the previous plane), or ``""``
    when each plane's result depends only on the plane. Restoring a chunk of a stack on its own
    then differs from restoring the whole stack, so ``batch`` asks before splitting one. Statistics
    shared over the stack (normalisation, a shared airlight) do not count: a chunk reads them from
    the whole stack (:attr:`Planes.whole <napari_ssl_restore.engine.planes.Planes.whole>`)."""
    context_frames: int = 0
    """Frames before a frame that a video method pairs it with: a chunk of a time-lapse restored on
    its own reads this many frames before its first (and writes only its own)."""
    zoom_of: Callable[[Any], int] | None = None
    """The factor by which the output's Y and X grow for given ``Params`` (super-resolution)."""
    standing: Callable[[Mapping[str, Any]], str] | None = None
    """Where the method stands against the classical baseline a user would otherwise run, for the
    given settings (parameter values by name, e.g. ``{"task": "deconv"}``), as measured on held-out
    data at the defaults: one sentence naming the method to use instead where it loses, ``""``
    where it does not. The dock shows it under the title; the CLI prints it before a run."""

    def zoom(self, params) -> int:
        return int(self.zoom_of(params)) if self.zoom_of is not None else 1

    def standing_of(self, settings: Mapping[str, Any]) -> str:
        """:attr:`standing` for ``settings`` (a mapping, or a ``Params``), ``""`` when none."""
        if self.standing is None:
            return ""
        if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
            settings = dataclasses.asdict(settings)
        return self.standing(settings)

    def links(self, params) -> str:
        return self.linked_planes(params) if self.linked_planes is not None else ""

    def primary_name(self, params) -> str:
        return self.primary_of(params) if self.primary_of is not None else self.outputs[0].name

    @property
    def param_info(self) -> list[ParamInfo]:
        return describe(self.params)

    @property
    def primary(self) -> Output:
        return self.outputs[0]

    def make_params(self, **values: Any):
        """Build a validated ``Params``; unknown names fail with the list of valid ones."""
        names = [p.name for p in self.param_info]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise TypeError(
                f"{self.name}: unknown parameter(s) {', '.join(unknown)}. Valid parameters: "
                f"{', '.join(names) or '(none)'}"
                + (f"; extra inputs: {', '.join(i.name for i in self.inputs)}" if self.inputs else "")
                + "."
            )
        return self.params(**values)


_CACHE: dict[str, MethodSpec] = {}


def list_methods() -> list[str]:
    """Names of all registered methods."""
    return list(METHOD_MODULES)


def get_method(name: str) -> MethodSpec:
    """Return the :class:`MethodSpec` registered as ``name`` (clear error for unknown names)."""
    if not isinstance(name, str) or name not in METHOD_MODULES:
        raise ValueError(
            f"Unknown method {name!r}. Available methods: {', '.join(METHOD_MODULES)} "
            "(see `napari-ssl-restore list`)."
        )
    if name not in _CACHE:
        spec = importlib.import_module(METHOD_MODULES[name]).SPEC
        if spec.name != name:
            raise RuntimeError(f"registry entry {name!r} points to a module whose SPEC is {spec.name!r}")
        if spec.function != METHODS[name]:
            raise RuntimeError(f"registry entry {name!r} names the function {METHODS[name]!r}; its "
                               f"SPEC says {spec.function!r}")
        _CACHE[name] = spec
    return _CACHE[name]


def all_methods() -> list[MethodSpec]:
    return [get_method(n) for n in METHOD_MODULES]
