"""The Restore assistant dock: analyse a layer, then open the recommended method's dock, filled in.

The dock gathers an image layer, its axes (inferred as a method dock does, editable), an optional
second acquisition of the same field (for Noise2Noise) and an optional PSF layer. **Analyse** drives
:func:`napari_ssl_restore.assistant.iter_analyse` — the generator behind ``analyse()`` — in a napari
``thread_worker``, through the same Stop wrapper the method docks use (``widgets._until_stopped``).
**Stop** returns the dock to idle at once and the worker ends at its next step; nothing is added to
the viewer either way. The report is the analysis's summary sentence and one short line per
measurement; each recommendation is a button that opens that method's dock the way the Plugins menu
does (``viewer.window.add_plugin_dock_widget``, an open dock is reused), selects the analysed layer
and axes, fills the recommended parameters and, for Noise2Noise, the second acquisition as its
``target`` (a given PSF fills a dock's ``psf`` input).

The menu names come from the manifest (``napari.yaml``) matched to the registry by class name, so no
list of methods is written here.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, LineEdit, ProgressBar, PushButton
from qtpy.QtWidgets import QFrame, QLabel, QPushButton, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

from ..core.progress import StopToken
from ..core.registry import get_method, list_methods
from .widgets import _Stopped, _until_stopped, class_name, layer_axes

if TYPE_CHECKING:
    import napari

logger = logging.getLogger(__name__)

WIDGETS_MODULE = "napari_ssl_restore._napari.widgets:"
"""Where ``napari.yaml`` names the method docks' classes."""


@functools.cache
def dock_names() -> tuple[str, dict[str, tuple[str, str]]]:
    """The plugin's name and, per method, its dock's ``display_name`` and title in ``napari.yaml``.

    Returns
    -------
    plugin : str
        The manifest's ``name`` (what ``add_plugin_dock_widget`` takes first).
    names : dict of str to (str, str)
        Method name -> (widget display name, command title), for every method with a dock in the
        manifest (matched through the class each widget command names, see
        :func:`.widgets.class_name`).
    """
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(Path(__file__).resolve().parents[1] / "napari.yaml")
    commands = {c.id: c for c in manifest.contributions.commands or []}
    by_class = {class_name(m): m for m in list_methods()}
    names = {}
    for w in manifest.contributions.widgets or []:
        command = commands.get(w.command)
        target = command.python_name if command is not None else ""
        method = by_class.get(target.removeprefix(WIDGETS_MODULE)) if \
            target.startswith(WIDGETS_MODULE) else None
        if command is not None and method is not None:
            names[method] = (w.display_name, command.title)
    return manifest.name, names


def _seconds(rec: dict) -> str:
    """``'~12 min (CPU, measured)'``: the recommendation's expected time and where it came from."""
    from ..estimate import duration

    return (f"~{duration(rec['expected_seconds'])} "
            f"({'measured' if rec.get('seconds_measured') else 'rough'})")


def report_lines(report: dict[str, Any]) -> list[str]:
    """One short line per measurement of an ``analyse()`` report (noise, blur, haze, motion...).

    Parameters
    ----------
    report : dict
        What :func:`napari_ssl_restore.assistant.analyse` returns.

    Returns
    -------
    list of str
        ``"noise: poisson-gaussian, σ 197 (var = 50.3·u + 288)"``, ``"blur: none"`` ...
    """
    noise = report["noise"]
    line = f"noise: {noise['model']}, σ {noise['sigma']:.3g}"
    if noise["model"] != "gaussian":
        line += f" (var = {noise['a']:.3g}·u + {noise['b']:.3g})"
    lines = [line + (", correlated" if noise.get("correlated") else "")]
    blur = report.get("blur_sigma")
    lines.append("blur: none" if blur is None else f"blur: PSF σ {blur:.2g} px")
    lines.append(f"haze: score {report['haze']['score']:.2f}")
    if report.get("time"):
        t = report["time"]
        lines.append(f"motion: {t['motion_px']:.2g} px between frames "
                     f"(similarity {t['similarity']:.2f})")
    if report.get("second"):
        s = report["second"]
        lines.append("second: " + ("registered" if s["registered"] else "NOT registered") + ", "
                     + ("independent" if s["independent_noise"] else "shared") + " noise")
    if report.get("clipped", 0) > 0.001:
        lines.append(f"clipped: {100 * report['clipped']:.1f} % of pixels")
    return lines


def _choose(combo: ComboBox, layer) -> bool:
    """Select ``layer`` in a layer chooser (comparing with ``==``: napari hands plugins proxies)."""
    for attempt in range(2):
        match = next((c for c in combo.choices if c is not None and c == layer), None)
        if match is not None:
            combo.value = match
            return True
        if attempt == 0:
            combo.reset_choices()
    return False


def _set_param(widget, value) -> None:
    """Set a dock's parameter field; text fields (tiny floats) take the value's text."""
    if isinstance(widget, LineEdit) and not isinstance(value, str):
        value = repr(value)
    widget.value = value


class _Run:
    """One analysis: its Stop token and whether the dock still listens to it."""

    def __init__(self, layer, axes: str, second, psf):
        self.token = StopToken()
        self.live = True
        self.layer, self.axes, self.second, self.psf = layer, axes, second, psf

    def drop(self) -> None:
        """Stop listening and ask the worker to stop at its next step."""
        self.live = False
        self.token.set()


class AssistantWidget(QWidget):
    """Dock that analyses a layer and opens the recommended methods' docks, filled in.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        Handed in by napari when the dock is opened from the Plugins menu.

    Attributes
    ----------
    report : dict or None
        The last analysis (what ``analyse()`` returns), None before one finished.
    rec_buttons : list of QPushButton
        One "Open <method>" button per recommendation, best first.
    """

    def __init__(self, napari_viewer: "napari.viewer.Viewer"):  # noqa: UP037
        super().__init__()
        self.viewer = napari_viewer
        self.report: dict[str, Any] | None = None
        self.rec_buttons: list[QPushButton] = []
        self._run: _Run | None = None
        self._analysed: _Run | None = None  # the inputs of the report shown
        self._worker = None
        self._pbar = None
        self._second_filled = None  # the layer _fill_second put in `second` (not the user)
        self._build()
        layers = napari_viewer.layers
        layers.events.inserted.connect(self._refresh)
        layers.events.removed.connect(self._refresh)
        current = [None]  # the run in flight, for the closure below (self may be gone by then)
        self._current = current

        def forget(_obj=None, layers=layers, refresh=self._refresh, current=current):
            for event in (layers.events.inserted, layers.events.removed):
                event.disconnect(refresh)
            if current[0] is not None:  # closed mid-run: let the worker end
                current[0].drop()

        self.destroyed.connect(forget)
        active = layers.selection.active
        if active is not None:
            _choose(self.image, active)
        self._on_layer_changed()

    # --- the form ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.title = Label(value="<b>Restore assistant</b>")
        self.intro = Label(value="Measures noise, blur, haze and motion on a few planes and "
                                 "suggests methods to try.")
        self.image = ComboBox(name="image", label="image", choices=self._layer_choices,
                              tooltip="The image layer to analyse.")
        self.axes = LineEdit(name="axes", label="axes",
                             tooltip="One letter per dimension: T (time), Z, Y, X, C (channels). "
                                     "Filled in from the layer; write TYX for a time-lapse "
                                     "read as ZYX.")
        self.second = ComboBox(name="second", label="second acquisition", nullable=True,
                               choices=self._layer_choices,
                               tooltip="Optional: another acquisition of the same field (same "
                                       "shape), for Noise2Noise.")
        self.psf = ComboBox(name="psf", label="PSF", nullable=True, choices=self._layer_choices,
                            tooltip="Optional: a measured PSF; the blur is then read from it.")
        self.second.value = self.psf.value = None
        self.form = Container(widgets=[self.image, self.axes, self.second, self.psf])
        self.analyse_button = PushButton(name="analyse", text="Analyse")
        self.stop_button = PushButton(name="stop", text="Stop", enabled=False,
                                      tooltip="Stop the analysis; nothing is added.")
        buttons = Container(widgets=[self.analyse_button, self.stop_button],
                            layout="horizontal", labels=False)
        self.progress = ProgressBar(name="progress", label="progress", value=0, min=0, max=1000)
        self.status = Label(name="status", value="ready")
        self.summary = QLabel()
        self.details = QLabel()
        self.details.setStyleSheet("QLabel { font-size: 11px; }")
        for label in (self.title.native, self.intro.native, self.status.native, self.summary,
                      self.details):
            label.setWordWrap(True)
            label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.recs = QWidget()
        self.recs_layout = QVBoxLayout(self.recs)
        self.recs_layout.setContentsMargins(0, 4, 0, 0)
        body = QWidget()
        body_layout = QVBoxLayout(body)
        body_layout.setContentsMargins(0, 0, 0, 0)
        for part in (self.summary, self.details, self.recs):
            body_layout.addWidget(part)
        body_layout.addStretch(1)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setWidget(body)
        layout = QVBoxLayout(self)
        for part in (self.title.native, self.intro.native, self.form.native, buttons.native,
                     self.progress.native, self.status.native):
            layout.addWidget(part)
        layout.addWidget(self.scroll, 1)
        self.image.changed.connect(self._on_layer_changed)
        self.analyse_button.changed.connect(lambda: self.analyse())
        self.stop_button.changed.connect(self.stop)
        self._clear_report()

    def _layer_choices(self, _widget=None):
        import napari

        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, napari.layers.Image)]

    def _refresh(self, _event=None) -> None:
        self.form.reset_choices()
        self._fill_second()

    def _on_layer_changed(self, _value=None) -> None:
        layer = self.image.value
        if layer is not None:
            self.axes.value = layer_axes(layer)
        self._fill_second(image_changed=True)

    def _fill_second(self, image_changed: bool = False) -> None:
        """The second acquisition a sample made for the image (the other layer of the noisy pair),
        as the method docks fill Noise2Noise's ``target``."""
        from .sample_data import fill_input

        self._second_filled = fill_input(self.second, self._second_filled, self.viewer.layers,
                                         "target", self.image.value, image_changed)

    # --- analysing ---------------------------------------------------------------------------------
    def analyse(self, sync: bool = False):
        """Analyse the chosen layer (in a thread unless ``sync``); return the worker or None."""
        from ..assistant import iter_analyse

        if self._run is not None:
            self.status.value = "an analysis is running: Stop it first."
            return None
        layer = self.image.value
        if layer is None:
            self._error("add or choose an image layer first.")
            return None
        run = _Run(layer, self.axes.value.strip().upper(), self.second.value, self.psf.value)
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        second = None if run.second is None else run.second.data
        psf = None if run.psf is None else np.asarray(run.psf.data)
        gen = _until_stopped(iter_analyse(data, run.axes or None, second=second, psf=psf),
                             run.token)
        self._start(run)
        if sync:
            self._run_sync(gen, run)
            return None
        from napari.qt.threading import create_worker

        def work():
            return (yield from gen)

        worker = create_worker(work, _start_thread=False, _progress=False, _ignore_errors=True)
        worker.yielded.connect(lambda step: self._on_step(step, run))
        worker.returned.connect(lambda result: self._on_done(result, run))
        worker.errored.connect(lambda exc: self._on_error(exc, run))
        worker.finished.connect(lambda: self._on_finished(run))
        self._worker = worker
        worker.start()
        return worker

    def _run_sync(self, gen, run: _Run) -> None:
        try:
            while True:
                self._on_step(next(gen), run)
        except StopIteration as done:
            self._on_done(done.value, run)
        except Exception as exc:  # noqa: BLE001 - reported like the threaded path does
            self._on_error(exc, run)
        finally:
            self._on_finished(run)

    def stop(self) -> None:
        """Stop the analysis: the dock is idle at once, the worker ends at its next step."""
        run = self._run
        if run is None:
            return
        run.drop()
        self._idle()
        self.progress.value = 0
        self.status.value = "stopped; nothing was analysed."

    def _start(self, run: _Run) -> None:
        from napari.utils import progress

        self._run = self._current[0] = run
        self._clear_report()
        self.analyse_button.enabled = False
        self.stop_button.enabled = True
        self.progress.value = 0
        self.status.value = f"analysing {run.layer.name!r}..."
        self._pbar = progress(total=1000, desc=f"analyse: {run.layer.name}")

    def _idle(self) -> None:
        self._run = self._current[0] = None
        self._worker = None
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.analyse_button.enabled = True
        self.stop_button.enabled = False

    def _on_step(self, step, run: _Run) -> None:
        if not run.live:
            return
        value = round(1000 * step.fraction)
        self.progress.value = value
        self.status.value = step.message
        pbar = self._pbar
        if pbar is not None:
            pbar.update(value - pbar.n)

    def _on_done(self, result, run: _Run) -> None:
        if not run.live or isinstance(result, _Stopped):
            return
        self.report, self._analysed = result, run
        self._show_report(result, run)
        n = len(result["recommendations"])
        self.status.value = (f"done: {n} recommendation{'s' if n != 1 else ''}" if n else
                             "done: nothing to recommend (the image looks clean).")

    def _on_error(self, exc: Exception, run: _Run) -> None:
        if not run.live:
            return
        if not isinstance(exc, ValueError | TypeError):  # a bug, not the input: keep the trace
            logger.error("analyse failed", exc_info=exc)
            self._error(f"{type(exc).__name__}: {exc}")
        else:
            self._error(str(exc))

    def _on_finished(self, run: _Run) -> None:
        if run.live:
            run.live = False
            self._idle()

    def _error(self, message: str) -> None:
        from napari.utils.notifications import show_error

        line = message.strip().splitlines()[0] if message.strip() else "failed"
        self.status.value = f"error: {line}"
        show_error(f"Restore assistant: {line}")

    # --- the report --------------------------------------------------------------------------------
    def _clear_report(self) -> None:
        self.report = None
        self.summary.setText("")
        self.details.setText("")
        self.summary.setVisible(False)
        self.details.setVisible(False)
        for button in self.rec_buttons:
            button.setParent(None)
        while self.recs_layout.count():
            item = self.recs_layout.takeAt(0)
            if item.widget() is not None:
                item.widget().setParent(None)
        self.rec_buttons = []

    def _show_report(self, report: dict[str, Any], run: _Run) -> None:
        self._clear_report()
        self.report = report
        self.summary.setText(f"<b>{run.layer.name}</b> ({run.axes or 'axes guessed'}): "
                             f"{report['summary']}")
        self.details.setText("<br>".join(report_lines(report)))
        self.summary.setVisible(True)
        self.details.setVisible(True)
        recs = report["recommendations"]
        if recs:
            self.recs_layout.addWidget(QLabel("<b>Try, best first:</b>"))
        _plugin, names = dock_names()
        for i, rec in enumerate(recs):
            title = names[rec["method"]][1] if rec["method"] in names else rec["method"]
            params = ", ".join(f"{k}={v}" for k, v in rec["params"].items())
            button = QPushButton(f"{i + 1}. Open {title}")
            button.setToolTip(f"{get_method(rec['method']).title}.\n{rec['why']}\nParameters: "
                              f"{params or 'defaults'}. About {_seconds(rec)}.")
            button.setEnabled(rec["method"] in names)
            button.clicked.connect(lambda _checked=False, i=i: self.open_recommendation(i))
            note = QLabel(f"{rec['why']} {params + ' · ' if params else ''}"
                          f"{_seconds(rec)}")
            note.setWordWrap(True)
            note.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
            note.setStyleSheet("QLabel { font-size: 11px; }")
            self.recs_layout.addWidget(button)
            self.recs_layout.addWidget(note)
            self.rec_buttons.append(button)

    # --- opening a method's dock -------------------------------------------------------------------
    def open_recommendation(self, index: int):
        """Open recommendation ``index``'s dock (or the open one), filled in; return
        ``(dock, widget)``, or None when it could not (the reason in the status line)."""
        from napari.utils.notifications import show_info

        run = self._analysed
        if self.report is None or run is None:
            return None
        rec = self.report["recommendations"][index]
        plugin, names = dock_names()
        if rec["method"] not in names:
            self._error(f"{rec['method']} has no dock in napari.yaml.")
            return None
        if not any(run.layer == layer for layer in self.viewer.layers):
            self._error(f"the analysed layer {run.layer.name!r} is no longer in the viewer.")
            return None
        # a tab beside the assistant: on a laptop screen two stacked docks would each get half
        dock, widget = self.viewer.window.add_plugin_dock_widget(plugin, names[rec["method"]][0],
                                                                 tabify=True)
        dock.show()
        dock.raise_()
        if not widget.run_button.enabled:  # already running: leave its settings alone
            self._error(f"the {rec['method']} dock is running: Stop it before changing it.")
            return dock, widget
        skipped = self._fill(widget, rec, run)
        message = f"opened {rec['method']} on {run.layer.name!r}"
        self.status.value = message + (f"; not set: {', '.join(skipped)}" if skipped else "")
        show_info(self.status.value)
        return dock, widget

    @staticmethod
    def _fill(widget, rec: dict[str, Any], run: _Run) -> list[str]:
        """Select the layer and axes and set the recommended parameters and inputs of a method
        dock; return what could not be set."""
        skipped = []
        if not _choose(widget.image, run.layer):
            skipped.append("image")
        if run.axes:
            widget.axes.value = run.axes
        controls = list(widget.settings())  # task/mode first: they decide what is shown
        params = rec["params"]
        for name in sorted(params, key=lambda n: n not in controls):
            if name not in widget.params:
                skipped.append(name)
                continue
            try:
                _set_param(widget.params[name], params[name])
            except (ValueError, TypeError):
                skipped.append(name)
        extras = {"target": run.second, "psf": run.psf}
        for name, layer in extras.items():
            if layer is not None and name in widget.inputs and not _choose(widget.inputs[name],
                                                                             layer):
                skipped.append(name)
        return skipped
