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

The form is built in :mod:`.form`, the layers a run adds in :mod:`.layers`; a run on a dask scheduler
is :mod:`napari_ssl_restore.batching.remote` (no Qt there).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from qtpy.QtWidgets import QWidget

from ..api import execute, guess_axes, prepare
from ..core.progress import Cancelled, Step, StopToken, steps_until_stop, unrestored
from ..core.registry import ExtraInput, MethodSpec, get_method, list_methods
from .form import ParamWidgets, build_form
from .layers import LayerOutputs

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


class _Stopped:
    """What the worker returns when a Stop ended the run without a result (with the reason)."""

    def __init__(self, reason: str):
        self.reason = reason


class RestoreWidget(LayerOutputs, QWidget):
    """Dock widget running one method (the class attribute ``method``) on a napari layer."""

    method: ClassVar[str] = ""
    params: ParamWidgets
    """The parameter fields by name (built with the rest of the form by :func:`.form.build_form`)."""

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: UP037
        super().__init__()
        if not self.method:
            raise TypeError("RestoreWidget is a base class: open a method's widget, e.g. "
                            "widget_class('dcp')(viewer).")
        self.viewer = napari_viewer
        self.spec: MethodSpec = get_method(self.method)
        self._worker = None
        self._token: StopToken | None = None
        self._previews: dict = {}
        self._filled: dict = {}  # input name -> the layer _fill_inputs put there (not the user)
        self._live = False  # previews are shown only while a run is live
        self._started = 0.0  # when the run began (time.monotonic)
        self._pbar = None
        self.last_result: dict | None = None
        self._residual_of: tuple | None = None  # (layer, output, provenance) of the last run

        build_form(self)  # the fields, buttons and layout (self.image, self.params, ...)

        self.image.changed.connect(self._on_layer_changed)
        for name in self._controls():
            self.params[name].changed.connect(self._update_visibility)
        self.run_button.changed.connect(lambda: self.run())
        self.stop_button.changed.connect(self.stop)
        self.estimate_button.changed.connect(lambda: self.estimate())
        self.residual_button.changed.connect(lambda: self.add_residual())
        if self.export_button is not None:
            self.export_button.changed.connect(lambda: self.export_bioimageio())
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
        standing = self.spec.standing_of(settings)
        self.standing.value = f"<i>{standing}</i>" if standing else ""
        self.standing.visible = bool(standing)

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
        self._fill_inputs()

    def _fill_inputs(self, image_changed: bool = False) -> None:
        """Fill each empty optional input with the newest layer a sample made for it *and for the
        chosen image* (:func:`~.sample_data.fill_input`): after *Open Sample* the unpaired
        examples are the ``clean`` input of their degraded layer, each acquisition of a pair the
        other's ``target``. A layer filled this way follows the image (replaced or emptied when
        the image changes; one that is the image itself is emptied then); a layer the user chose
        stays."""
        from .sample_data import fill_input

        for inp in self.spec.inputs:
            if not inp.required:
                self._filled[inp.name] = fill_input(
                    self.inputs[inp.name], self._filled.get(inp.name), self.viewer.layers,
                    inp.name, self.image.value, image_changed)

    def _on_layer_changed(self, _value=None) -> None:
        layer = self.image.value
        if layer is not None:
            self.axes.value = layer_axes(layer, video=self.spec.video)
        self._fill_inputs(image_changed=True)

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
        from ..api import default_stores
        from ..engine.planes import numpy_store
        from ..estimate import estimate

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
        return self._status_worker(work, self.estimate_button, self._on_error)

    def _status_worker(self, work, button, on_error):
        """``work()`` (returning a status line) in a thread, ``button`` disabled meanwhile."""
        from napari.qt.threading import create_worker

        worker = create_worker(work, _start_thread=False)
        worker.returned.connect(lambda text: setattr(self.status, "value", text))
        worker.errored.connect(on_error)
        button.enabled = False
        worker.finished.connect(lambda: setattr(button, "enabled", True))
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
        from ..batching.remote import _cluster_run, _layer_file

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
        if running:
            self.residual_button.enabled = False
            self.quality.value, self.quality.visible = "", False
            self.curve.value, self.curve.visible, self._curve = "", False, {}
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
        self._show_curve(step.metrics)

    def _show_curve(self, metrics: dict) -> None:
        """The held-out validation loss so far as a one-line curve (methods that report one)."""
        value, at = metrics.get("val_loss"), metrics.get("step")
        if value is None or at is None or not np.isfinite(value):
            return
        curve = getattr(self, "_curve", {})
        if curve.get(list(curve)[-1] if curve else None) == value:
            return  # the same check reported again
        curve[int(at)] = float(value)
        self._curve = curve
        best = min(curve, key=curve.__getitem__)
        self.curve.value = (f"held-out loss {sparkline(list(curve.values()))} "
                            f"{value:.3g} (best {curve[best]:.3g} at step {best})")
        self.curve.visible = True

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
        self._show_quality(result, layer)
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

    # --- the model as a bioimage.io zip ------------------------------------------------------------
    def export_bioimageio(self, path: str | None = None, sync: bool = False):
        """Export the model in the ``model`` field (after a training run: the model it kept; empty:
        the shipped denoiser, for methods that start from it) as a bioimage.io model zip at
        ``path`` (asked with a file dialog when None; an existing file is replaced), in a thread
        unless ``sync``. The selected layer's middle plane is the test image when its channels suit
        the model (else, or when it does not fit, a synthetic one). Returns the worker, or None."""
        from napari.utils.notifications import show_error

        field = self.params["model"].value
        model = "" if field is None or str(field) in ("", ".") else str(field)
        mode = next((p for p in self.spec.param_info if p.name == "mode"), None)
        if not model and mode is not None and "apply" in (mode.choices or ()):
            show_error(f"{self.spec.name}: no model to export. Train one (it is kept in the "
                       "model field) or choose a saved .pt.")
            return None
        if path is None:
            path = self._ask_zip(model)
            if not path:
                return None
        layer = self.image.value
        data = None if layer is None else layer.data[0] if getattr(layer, "multiscale", False) \
            else layer.data
        axes = self.axes.value or None

        def work() -> str:
            return _export(model, path, data, axes)

        self.status.value = f"exporting the model to {path}..."
        if sync:
            try:
                self.status.value = work()
            except Exception as exc:  # noqa: BLE001 - shown as the threaded path shows it
                self._on_export_error(exc)
            return None
        return self._status_worker(work, self.export_button, self._on_export_error)

    def _ask_zip(self, model: str) -> str:
        """The zip to write, from a save dialog ('' when cancelled or refused)."""
        import os

        from napari.utils.notifications import show_error
        from qtpy.QtWidgets import QFileDialog

        start = os.path.splitext(model)[0] + ".zip" if model and os.path.isfile(model) else \
            f"{self.spec.name}-model.zip"
        path, _ = QFileDialog.getSaveFileName(self, "Export to bioimage.io", start,
                                              "bioimage.io model (*.zip)")
        if path and not path.lower().endswith(".zip"):
            path += ".zip"
            if os.path.exists(path):  # the dialog asked about the name without .zip
                show_error(f"{path} exists; choose another name.")
                return ""
        return path

    def _on_export_error(self, exc: Exception) -> None:
        from napari.utils.notifications import show_error

        self.status.value = f"export failed: {exc}"
        show_error(f"{self.spec.name}: export to bioimage.io failed: {exc}")

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

def _export(model: str, path: str, data, axes: str | None) -> str:
    """Export ``model`` to ``path`` with a plane of ``data`` as its test image where it suits the
    model, else a synthetic one; returns the status line."""
    from ..core.models import model_named
    from ..engine.planes import Source
    from ..export import export_bioimageio

    sample, why = None, "the layer's channels do not suit the model"
    if data is not None and axes:
        try:
            if Source(data, axes).c == model_named(model)["config"].get("in_channels", 1):
                sample = data
        except (ValueError, TypeError) as exc:
            why = str(exc)
    if sample is not None:
        try:
            return f"exported {export_bioimageio(model, path, sample, axes=axes, overwrite=True)}"
        except ValueError as exc:  # the layer does not fit (too small, flat): a synthetic image
            why = str(exc)
    written = export_bioimageio(model, path, None, overwrite=True)
    return f"exported {written} (synthetic test image: {why})" if data is not None else \
        f"exported {written}"


def sparkline(values: list[float], width: int = 24) -> str:
    """``values`` as a row of block characters (the last ``width``), low to high."""
    bars = "▁▂▃▄▅▆▇█"
    v = np.asarray(values[-width:], float)
    span = float(v.max() - v.min())
    if span <= 0:
        return bars[0] * len(v)
    return "".join(bars[int(round((x - v.min()) / span * (len(bars) - 1)))] for x in v)


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
