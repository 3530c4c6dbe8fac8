"""One dock widget per registered method, generated from its :class:`MethodSpec`.

napari opens a plugin widget by instantiating the class named in ``napari.yaml`` and hands it the
viewer only when it is a ``QWidget`` (or magicgui ``Widget``) subclass whose ``__init__`` takes
``napari_viewer``. :func:`widget_class` makes one such subclass of :class:`RestoreWidget` per method
(``DcpWidget``, ``DipWidget``...), resolved by name from this module, so the registry stays the only
list of methods.

The widget only gathers the layer, axes, device and parameters; the work is the method's own generator
(the same one the API and CLI drive), run in a napari ``thread_worker``. It shows only the parameters
the chosen ``task``/``mode`` uses, keeps paper-level knobs in a collapsed "advanced" section and the
Run/Stop/progress rows below a scroll area, so it fits a laptop screen. Progress reaches the widget
through the worker's ``yielded`` signal, Stop sets a flag the generator sees at its next report
(about every half second), and results come back as new layers named ``"<input> <method>"`` with the
input's scale and translate and the provenance in ``layer.metadata["napari_ssl_restore"]``.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Widget,
)
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget
from superqt import QCollapsible

from ..api import execute, guess_axes, prepare
from ..core.device import DEVICE_CHOICES
from ..core.io import PROVENANCE_KEY
from ..core.params import ParamInfo
from ..core.progress import Cancelled, Step, StopToken, steps_until_stop, unrestored
from ..core.registry import ExtraInput, MethodSpec, get_method, list_methods

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)


def layer_axes(layer, *, video: bool = False) -> str:
    """Axes of a layer: its axis labels when they are T/Z/Y/X/C letters, else a guess from the shape."""
    ndim = np.ndim(layer.data)
    labels = [str(a).upper() for a in getattr(layer, "axis_labels", ())]
    if getattr(layer, "rgb", False):
        labels = labels + ["C"]
    joined = "".join(labels)
    if len(labels) == ndim and all(len(a) == 1 for a in labels) and set(joined) <= set("TZYXC") \
            and len(set(joined)) == ndim and "Y" in joined and "X" in joined:
        return joined
    return guess_axes(np.shape(layer.data), video=video, rgb=bool(getattr(layer, "rgb", False)))


def _param_widget(p: ParamInfo) -> Widget:
    opts: dict[str, Any] = {"name": p.name, "label": p.name.replace("_", " "), "tooltip": p.doc}
    if p.widget in ("open_file", "save_file"):
        # nullable: an empty field stays empty (a FileEdit would otherwise show Path("") as ".")
        return FileEdit(value=p.default or None, mode="r" if p.widget == "open_file" else "w",
                        filter="*.pt", nullable=True, **opts)
    if p.choices:
        return ComboBox(value=p.default, choices=list(p.choices), **opts)
    if p.type is bool:
        return CheckBox(value=p.default, text=opts.pop("label"), **opts)
    if p.type is int:
        return SpinBox(value=p.default, min=int(p.min if p.min is not None else -(2**31)),
                       max=int(p.max if p.max is not None else 2**31 - 1), **opts)
    if p.type is float:
        if p.default != 0 and abs(p.default) < 1e-2:
            # spin boxes round tiny values; a text field keeps 1e-4 exact
            return LineEdit(value=repr(p.default), **opts)
        return FloatSpinBox(value=p.default, min=p.min if p.min is not None else -1e9,
                            max=p.max if p.max is not None else 1e9, step=p.step or 0.01, **opts)
    return LineEdit(value=str(p.default), **opts)


class ParamWidgets(dict):
    """The parameter widgets by name, also as attributes (``widget.params.task.value``)."""

    def __getattr__(self, name: str) -> Widget:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __iter__(self):
        return iter(self.values())


class _Stopped:
    """What the worker returns when a Stop ended the run without a result (with the reason)."""

    def __init__(self, reason: str):
        self.reason = reason


class RestoreWidget(QWidget):
    """Dock widget running one method (the class attribute ``method``) on a napari layer."""

    method: ClassVar[str] = ""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):
        super().__init__()
        if not self.method:
            raise TypeError("RestoreWidget is a base class: open a method's widget, e.g. "
                            "widget_class('dcp')(viewer).")
        self.viewer = napari_viewer
        self.spec: MethodSpec = get_method(self.method)
        self._worker = None
        self._token: StopToken | None = None
        self._previews: dict = {}
        self._live = False  # previews are shown only while a run is live
        self._started = 0.0  # when the run began (time.monotonic)
        self._pbar = None
        self.last_result: dict | None = None

        self.title = Label(value=f"<b>{self.spec.title}</b>")
        self.image = ComboBox(name="image", label="image", choices=self._image_choices,
                              tooltip="The image layer to restore.")
        self.inputs: dict[str, ComboBox] = {
            inp.name: ComboBox(name=inp.name, label=inp.name.replace("_", " "),
                               nullable=not inp.required, choices=self._choices_for(inp),
                               tooltip=inp.doc)
            for inp in self.spec.inputs
        }
        self.axes = LineEdit(name="axes", label="axes",
                             tooltip="One letter per dimension: T (time), Z, Y, X, C (channels). "
                                     "Filled in from the layer; change it if the guess is wrong.")
        self.params = ParamWidgets((p.name, _param_widget(p)) for p in self.spec.param_info)
        basic = [self.params[p.name] for p in self.spec.param_info if not p.advanced]
        advanced = [self.params[p.name] for p in self.spec.param_info if p.advanced]
        self.device = ComboBox(name="device", label="device", choices=list(DEVICE_CHOICES),
                               value="auto", tooltip="auto: CUDA, then Apple MPS, then CPU.",
                               visible=self.spec.uses_torch)
        self.seed = SpinBox(name="seed", label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="Random seed: the same seed gives the same result.",
                            visible=self.spec.uses_torch)
        self.float_output = CheckBox(name="float_output", text="float32 output", value=False,
                                     tooltip="Return float32 instead of the input's dtype.")
        self.scheduler = LineEdit(
            name="scheduler", label="dask scheduler",
            tooltip="Address of a running dask scheduler (tcp://host:8786). When set, Run sends "
                    "the layer's planes to its workers, 'planes per task' at a time (needs "
                    "napari-ssl-restore[distributed]). The workers read the layer's file, or a "
                    "copy in the temporary folder for layers held in memory, so they must see "
                    "this machine's disk (a local or shared-disk cluster). Empty: run here.")
        self.chunk_planes = SpinBox(name="chunk_planes", label="planes per task", value=8, min=1,
                                    max=1_000_000, tooltip="Entries of the first T (else Z) "
                                    "axis each dask task restores.")
        self.form = Container(widgets=[self.image, *self.inputs.values(), self.axes, *basic])
        self.advanced_form = Container(widgets=[*advanced, self.device, self.seed,
                                                self.float_output, self.scheduler,
                                                self.chunk_planes])
        self.run_button = PushButton(name="run", text="Run")
        self.estimate_button = PushButton(name="estimate", text="Estimate",
                                          tooltip="Estimate the working memory and the time "
                                                  "per plane (a short probe run on a crop), "
                                                  "without running.")
        self.stop_button = PushButton(name="stop", text="Stop", enabled=False,
                                      tooltip="Stop at the next step. Optimisation methods keep "
                                              "their best result so far; others add nothing.")
        self.progress = ProgressBar(name="progress", label="progress", value=0, min=0, max=1000)
        self.status = Label(name="status", value="ready")
        buttons = Container(widgets=[self.run_button, self.stop_button, self.estimate_button],
                            layout="horizontal", labels=False)
        for label in (self.title, self.status):  # long titles/messages wrap instead of widening
            label.native.setWordWrap(True)
            label.native.setSizePolicy(QSizePolicy.Policy.Expanding,
                                       QSizePolicy.Policy.Preferred)

        # the parameters scroll; the title above and Run/Stop/progress/status below stay visible
        self.advanced = QCollapsible("advanced settings")
        self.advanced.setDuration(0)
        self.advanced.addWidget(self.advanced_form.native)
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        body_layout.addWidget(self.form.native)
        body_layout.addWidget(self.advanced)
        body_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setWidget(body)
        self.advanced.toggled.connect(self._fit_width)
        layout = QVBoxLayout(self)
        for part in (self.title.native, self.scroll, buttons.native, self.progress.native,
                     self.status.native):
            layout.addWidget(part)

        self.image.changed.connect(self._on_layer_changed)
        for name in self._controls():
            self.params[name].changed.connect(self._update_visibility)
        self.run_button.changed.connect(lambda: self.run())
        self.stop_button.changed.connect(self.stop)
        self.estimate_button.changed.connect(lambda: self.estimate())
        layers = napari_viewer.layers
        layers.events.inserted.connect(self._refresh)
        layers.events.removed.connect(self._refresh)

        def forget(_obj=None, layers=layers, refresh=self._refresh, token=lambda: self._token):
            for event in (layers.events.inserted, layers.events.removed):
                event.disconnect(refresh)
            if token() is not None:  # the dock was closed mid-run: let the run end
                token().set()

        self.destroyed.connect(forget)
        # start on the layer the user is on. napari hands plugins a proxy of the viewer whose
        # layers are new proxy objects at every access: compare layers with ==, never with `is`
        active = napari_viewer.layers.selection.active
        if active is not None and any(active == v for v in self.image.choices):
            self.image.value = active
        self._on_layer_changed()
        self._update_visibility()

    # --- what is shown -----------------------------------------------------------------------------
    def showEvent(self, event) -> None:  # noqa: N802 - Qt API
        super().showEvent(event)
        self._fit_width()

    def _fit_width(self, _expanded=None) -> None:
        """Make the scroll area as wide as its content (sizes are final only once shown), so the
        parameters are never clipped: it scrolls vertically only."""
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        self.scroll.setMinimumWidth(self.scroll.widget().minimumSizeHint().width() + bar)

    def _controls(self) -> list[str]:
        """Parameters (``task``, ``mode``) that decide which other parameters and inputs apply."""
        keys = {k for p in self.spec.param_info for k in p.when}
        keys |= {k for inp in self.spec.inputs for k, _ in inp.when}
        return [p.name for p in self.spec.param_info if p.name in keys]

    def settings(self) -> dict[str, Any]:
        """The current values of the controlling parameters, e.g. ``{"task": "sr"}``."""
        return {name: self.params[name].value for name in self._controls()}

    def _update_visibility(self, _value=None) -> None:
        settings = self.settings()
        for p in self.spec.param_info:
            self.params[p.name].visible = p.applies(settings)
        for inp in self.spec.inputs:
            self.inputs[inp.name].visible = inp.applies(settings)

    # --- layer choices -----------------------------------------------------------------------------
    def _image_choices(self, _widget=None):
        import napari

        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, napari.layers.Image)
                and not any(layer == p for p in self._previews.values())]

    def _choices_for(self, inp: ExtraInput):
        import napari

        kinds = {"image": (napari.layers.Image,), "labels": (napari.layers.Labels,),
                 "mask": (napari.layers.Labels, napari.layers.Shapes, napari.layers.Image)}[
            inp.layer_kind]

        def choices(_widget=None):
            return [(layer.name, layer) for layer in self.viewer.layers
                    if isinstance(layer, kinds)
                    and not any(layer == p for p in self._previews.values())] + [
                (f"({word})", word) for word in inp.keywords]

        return choices

    def _refresh(self, _event=None) -> None:
        self.form.reset_choices()

    def _on_layer_changed(self, _value=None) -> None:
        layer = self.image.value
        if layer is not None:
            self.axes.value = layer_axes(layer, video=self.spec.video)

    # --- running -----------------------------------------------------------------------------------
    def _param_values(self) -> dict[str, Any]:
        values = {}
        for p in self.spec.param_info:
            value = self.params[p.name].value
            if p.widget in ("open_file", "save_file"):
                value = "" if value is None or str(value) in ("", ".") else str(value)
            elif p.type is float and isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    raise ValueError(f"{p.name}: {value!r} is not a number.") from None
            values[p.name] = value
        return values

    def _extra_values(self, layer) -> dict[str, np.ndarray]:
        import napari

        extras = {}
        settings = self.settings()
        for inp in self.spec.inputs:
            src = self.inputs[inp.name].value
            if src is None or not inp.applies(settings):
                continue
            if isinstance(src, str):  # a keyword (clean='lateral')
                extras[inp.name] = src
            elif isinstance(src, napari.layers.Shapes):
                extras[inp.name] = src.to_masks(mask_shape=np.shape(layer.data)[-2:]).any(axis=0)
            elif inp.like_image:  # another acquisition of the image: streamed like it
                extras[inp.name] = src.data[0] if getattr(src, "multiscale", False) else src.data
            else:
                extras[inp.name] = np.asarray(src.data)
        return extras

    def _prepare(self):
        """The job for the selected layer and settings, or None (the error shown)."""
        from napari.utils.notifications import show_error

        layer = self.image.value
        if layer is None:
            show_error(f"{self.spec.name}: add or select an image layer first.")
            return None, None
        # the layer's data as it is (numpy, dask, zarr; a multiscale layer's full resolution):
        # lazy data streams plane by plane and its results come back as lazy layers
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        try:
            job = prepare(data, self.spec.name, axes=self.axes.value or None,
                          device=self.device.value, seed=int(self.seed.value),
                          float_output=self.float_output.value,
                          **self._extra_values(layer), **self._param_values())
        except (ValueError, TypeError) as exc:
            show_error(str(exc))
            self.status.value = f"error: {exc}"
            return None, None
        return job, layer

    def estimate(self, sync: bool = False):
        """Show the estimated working memory and time per plane in the status line."""
        from napari.qt.threading import create_worker

        from ..api import default_stores
        from ..estimate import estimate
        from ..engine.planes import numpy_store

        if self._worker is not None:
            return None
        job, _layer = self._prepare()
        if job is None:
            return None
        in_memory = default_stores(job) is numpy_store
        self.status.value = "estimating (a short probe run on a crop)..."

        def work():
            return "; ".join(estimate(job, outputs_in_memory=in_memory).lines())

        if sync:
            self.status.value = work()
            return None
        worker = create_worker(work, _start_thread=False)
        worker.returned.connect(lambda text: setattr(self.status, "value", text))
        worker.errored.connect(self._on_error)
        self.estimate_button.enabled = False
        worker.finished.connect(lambda: setattr(self.estimate_button, "enabled", True))
        worker.start()
        return worker

    def run(self, sync: bool = False):
        """Start the method on the selected layer (in a thread unless ``sync``); return the worker."""
        from napari.utils.notifications import show_error

        if self._worker is not None:
            show_error("A run is already in progress: Stop it first.")
            return None
        job, layer = self._prepare()
        if job is None:
            return None

        self._token = StopToken()
        self._set_running(True, layer)
        address = self.scheduler.value.strip()
        work = self._on_cluster(job, layer, address) if address and job.planes.lead else \
            execute(job)
        gen = _until_stopped(work, self._token)
        if sync:
            self._run_sync(gen, layer, job)
            return None
        from napari.qt.threading import create_worker

        def work():
            return (yield from gen)

        worker = create_worker(work, _start_thread=False, _progress=False)
        worker.yielded.connect(self._on_step)
        worker.returned.connect(lambda result: self._on_done(result, layer, job))
        worker.errored.connect(self._on_error)
        worker.finished.connect(self._on_finished)
        self._worker = worker
        worker.start()
        return worker

    def _on_cluster(self, job, layer, address: str):
        """The layer's planes as dask tasks on the scheduler at ``address``: the settings are
        read here (in the GUI thread), the work is :func:`_cluster_run`'s generator."""
        # a second acquisition (target=) is passed on too, so that batch refuses it and says why
        return _cluster_run(job, _layer_file(layer, job), address, int(self.chunk_planes.value),
                            {**self._param_values(), **self._extra_values(layer)})

    def _run_sync(self, gen, layer, job) -> None:
        try:
            while True:
                self._on_step(next(gen))
        except StopIteration as done:
            self._on_done(done.value, layer, job)
        except Exception as exc:  # noqa: BLE001 - reported like the threaded path does
            from napari.utils.notifications import show_error

            self._on_error(exc)
            show_error(f"{self.spec.name} failed: {exc}")
        finally:
            self._on_finished()

    def stop(self) -> None:
        """Ask the running method to stop at its next report (within about a second)."""
        if self._token is not None:
            self._token.set()
            self.status.value = "stopping..."

    def _set_running(self, running: bool, layer=None) -> None:
        self.run_button.enabled = not running
        self.estimate_button.enabled = not running
        self.stop_button.enabled = running
        self._live = running
        if running:
            import time

            from napari.utils import progress

            self._started = time.monotonic()
            self.progress.value = 0
            self.status.value = f"running {self.spec.name} on {layer.name!r}..."
            self._pbar = progress(total=1000, desc=f"{self.spec.name}: {layer.name}")

    def _on_step(self, step: Step) -> None:
        import time

        value = round(1000 * step.fraction)
        self.progress.value = value
        if self._token is None or not self._token.is_set():  # keep "stopping..." once asked
            elapsed = time.monotonic() - self._started
            left = ""
            if elapsed > 5 and 0.01 < step.fraction < 1:
                seconds = elapsed * (1 - step.fraction) / step.fraction
                left = (f" · about {seconds / 60:.0f} min left" if seconds >= 90
                        else f" · about {seconds:.0f} s left")
            self.status.value = step.message + left
        pbar = self._pbar  # local: updating it can process events that close it
        if pbar is not None:
            pbar.set_description(f"{self.spec.name}: {step.message}")
            pbar.update(value - pbar.n)
        if step.preview is not None:
            self._show_preview(step.preview)

    def _show_preview(self, preview) -> None:
        """Show each named preview in its own layer, created once and then updated in place.

        Adding a layer lets napari process events, and with them possibly the end of the run: a
        preview arriving once the run has ended is dropped, and one whose layer was being added
        when it ended is removed again.
        """
        if not self._live:
            return
        layer = self.image.value
        base = f"{layer.name if layer is not None else ''} {self.spec.name} preview"
        items = preview.items() if isinstance(preview, dict) else [("", preview)]
        for key, value in items:
            data = np.asarray(value)
            if data.ndim >= 3 and data.shape[-1] == 1:
                data = data[..., 0]
            rgb = data.ndim >= 3 and data.shape[-1] in (3, 4)
            current = self._previews.get(key)
            if current is None or current not in self.viewer.layers \
                    or current.data.shape != data.shape:
                if current is not None and current in self.viewer.layers:
                    self.viewer.layers.remove(current)
                name = f"{base} {key}".strip()
                kw = {}
                if layer is not None and data.shape == np.shape(layer.data):
                    # a preview of the whole stack (video methods): overlay it on the input
                    kw = {"scale": layer.scale, "translate": layer.translate}
                new = self.viewer.add_image(data, name=name, rgb=rgb, **kw)
                if not self._live:  # the run ended while the layer was being added
                    self.viewer.layers.remove(new)
                    return
                self._previews[key] = new
            else:
                current.data = data

    def _remove_preview(self) -> None:
        for layer in self._previews.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self._previews = {}

    def _on_done(self, result, layer, job) -> None:
        self._live = False
        self._remove_preview()
        if isinstance(result, _Stopped):  # "Stopped at iteration 12, before ...; nothing was added."
            reason = result.reason
            self.status.value = (reason[0].lower() + reason[1:] if reason.startswith("Stopped")
                                 else f"stopped: {reason}")
            return
        self.last_result = result
        self._add_layers(result, layer, job)
        prov = result["provenance"]
        kept = self._keep_model(result, layer)
        if prov.get("stopped"):
            n = int(np.prod([job.layout.size(a) for a in job.layout.leading], dtype=int))
            done = prov.get("planes_done", n)
            unit = "frame" if self.spec.video and "Z" not in job.layout.axes else "plane"
            rest = unrestored(done, n, unit)
            rest = f"; {rest} NOT restored (input kept)" if rest else ""
            self.status.value = f"stopped: best result so far kept for {done}/{n} {unit}(s){rest}"
        else:
            self.status.value = "done"
        if prov.get("warning"):  # e.g. an estimate that explains the data less than the input
            self.status.value += f"; warning: {prov['warning']}"
        if kept:
            self.status.value += f". Model kept at {kept}: mode is now 'apply' to use it on other layers"

    def _keep_model(self, result: dict, layer) -> str | None:
        """Keep a trained model (saved where asked, else in a temporary folder) for 'apply' runs."""
        ckpt = result.get("model")
        if ckpt is None or result["provenance"].get("params", {}).get("mode") != "train":
            return None
        import os
        import tempfile
        import time

        from ..core.models import save_model

        path = result["provenance"].get("model_saved")
        if not path:
            folder = os.path.join(tempfile.gettempdir(), "napari-ssl-restore-models")
            os.makedirs(folder, exist_ok=True)
            safe = "".join(ch if ch.isalnum() else "_" for ch in layer.name)
            path = save_model(ckpt, os.path.join(
                folder, f"{self.spec.name}-{safe}-{time.strftime('%Y%m%d-%H%M%S')}.pt"))
        if "model" in self.params:
            self.params.model.value = path
        if "mode" in self.params:
            self.params.mode.value = "apply"
        return path

    def _on_error(self, exc: Exception) -> None:
        self._live = False
        self._remove_preview()
        self.status.value = f"error: {exc}"

    def _on_finished(self) -> None:
        self._worker = None
        self._token = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.run_button.enabled = True
        self.estimate_button.enabled = True
        self.stop_button.enabled = False

    def _add_layers(self, result: dict, layer, job) -> list:
        prov = result["provenance"]
        meta = {PROVENANCE_KEY: dict(prov, input_layer=layer.name)}
        axes = job.layout.axes
        scale, translate = np.asarray(layer.scale, float), np.asarray(layer.translate, float)
        zoom = float(prov.get("zoom", 1) or 1)
        if zoom != 1:  # super-resolution: finer pixels over the same field of view
            dims = [a for a in axes if not (a == "C" and getattr(layer, "rgb", False))]
            scale, translate = scale.copy(), translate.copy()
            for a in "YX":
                i = dims.index(a)
                translate[i] += scale[i] * (0.5 / zoom - 0.5)
                scale[i] /= zoom
        added = []
        primary = prov.get("primary_output", self.spec.primary.name)
        for out in self.spec.outputs:
            if not out.layer or out.name not in result:
                continue
            data = result[out.name]
            if not isinstance(data, np.ndarray):  # a zarr store on disk: a lazy layer
                import dask.array as da

                data = da.from_zarr(data)
            name = f"{layer.name} {self.spec.name}"
            if out.name != primary:
                name += f" {out.name}"
            sc, tr = scale, translate
            if out.kind != "image" and "C" in axes and not getattr(layer, "rgb", False):
                keep = [i for i, a in enumerate(axes) if a != "C"]
                sc, tr = scale[keep], translate[keep]
            if out.kind == "labels":
                new = self.viewer.add_labels(data, name=name, scale=sc, translate=tr, metadata=meta)
            elif out.kind == "image":
                kw = {"rgb": getattr(layer, "rgb", False)}
                if not kw["rgb"]:
                    kw["colormap"] = layer.colormap.name
                new = self.viewer.add_image(data, name=name, scale=sc, translate=tr,
                                            metadata=meta, **kw)
            else:
                new = self.viewer.add_image(data, name=name, scale=sc, translate=tr,
                                            metadata=meta, colormap="magma",
                                            contrast_limits=(0.0, 1.0), visible=False)
            added.append(new)
        return added


def _cluster_run(job, path: str | None, address: str, chunk_planes: int, params: dict):
    """Generator: ``job``'s image (``path``, or a copy of the layer's data the workers can read)
    restored as dask tasks on the scheduler at ``address`` by
    :func:`napari_ssl_restore.batching.batch_steps` (the code path of ``batch``), a step per task;
    returns the outputs dict over the result's OME-Zarr store (a lazy layer)."""
    import os
    import shutil
    import tempfile

    import zarr

    from ..batching import batch_steps
    from ..core.progress import StopRequested

    client = _client(address)
    copy = None
    if path is None:  # held in memory: a copy the workers can read
        copy = tempfile.mkdtemp(prefix="napari-ssl-restore-input-")
        path = yield from _copy_planes(job, os.path.join(copy, "input.ome.zarr"))
    try:
        summary = yield from batch_steps(
            path, job.spec.name, tempfile.mkdtemp(prefix="napari-ssl-restore-batch-"), client,
            chunk_planes=chunk_planes, axes=job.layout.axes, device=job.device, seed=job.seed,
            float_output=job.float_output, **params)
    finally:
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)
    done = sum(r.status == "done" for r in summary)
    if any(r.status == "cancelled" for r in summary):
        raise StopRequested(f"Stopped after {done} of {len(summary)} tasks; nothing was added.")
    if summary.failed:
        first = summary.failed[0]
        raise RuntimeError(f"{len(summary.failed)} of {len(summary)} tasks failed; "
                           f"{first.unit}: {first.error}")
    group = zarr.open_group(summary[0].output, mode="r")
    primary = job.spec.primary_name(job.params)
    prov = dict(group.attrs[PROVENANCE_KEY], primary_output=primary, scheduler=address,
                tasks=len(summary), axes=job.layout.axes)
    return {primary: group["0"], "provenance": prov}


_CLIENTS: dict[str, Any] = {}


def _client(address: str):
    """A dask client for ``address``, made once per address."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("a dask scheduler needs dask.distributed: pip install "
                         "\"napari-ssl-restore[distributed]\", or clear the scheduler field to "
                         "run here.") from None
    client = _CLIENTS.get(address)
    if client is None or client.status != "running":
        try:
            client = Client(address, timeout=10, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"cannot reach the dask scheduler at {address!r} ({exc}); check the "
                             "address, or clear the field to run here.") from None
        _CLIENTS[address] = client
    return client


def _layer_file(layer, job) -> str | None:
    """The file the layer was opened from, when the workers can read it as the layer's data."""
    import os

    from ..engine.planes import open_array

    path = getattr(getattr(layer, "source", None), "path", None)
    if not path or not os.path.exists(path) or not str(path).lower().rstrip("/").endswith(
            (".tif", ".tiff", ".zarr")):
        return None
    try:
        arr, _ = open_array(path)
    except (ValueError, OSError):
        return None
    return str(path) if tuple(arr.shape) == tuple(job.layout.shape) else None


def _copy_planes(job, path: str):
    """Generator: the job's image written plane by plane to an OME-Zarr store at ``path``."""
    from ..core.io import create_zarr

    src = job.source
    store = create_zarr(path, tuple(job.layout.shape), src.dtype, job.layout.axes, ome=True)
    for i in range(src.n):
        where = src.index(i)
        store[where] = np.asarray(src.array[where])
        yield Step(i + 1, src.n, f"copying plane {i + 1}/{src.n} for the workers")
    return path


def _until_stopped(gen, token: StopToken):
    """A method's steps with Stop handling; returns the outputs dict, or :class:`_Stopped` (with
    the reason) when the Stop ended the run without a result."""
    try:
        return (yield from steps_until_stop(gen, token.is_set))
    except Cancelled as stopped:
        return _Stopped(str(stopped))


def class_name(method: str) -> str:
    """The widget class napari opens for ``method``: ``"double-dip"`` -> ``"DoubleDipWidget"``."""
    return "".join(part.capitalize() for part in method.replace("_", "-").split("-")) + "Widget"


_CLASSES: dict[str, type[RestoreWidget]] = {}


def widget_class(method: str) -> type[RestoreWidget]:
    """The dock-widget class of ``method`` (made once, from the registry)."""
    if method not in _CLASSES:
        spec = get_method(method)
        name = class_name(method)
        _CLASSES[method] = type(name, (RestoreWidget,), {
            "method": method, "__module__": __name__, "__qualname__": name,
            "__doc__": f"napari dock widget for {spec.title}."})
    return _CLASSES[method]


def __getattr__(name: str):
    """``napari.yaml`` names each method's class here (``DcpWidget``...); they are made on demand."""
    for method in list_methods():
        if class_name(method) == name:
            return widget_class(method)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
