"""The dock's form, built from a method's :class:`MethodSpec`: the layer, extra-input, axes and
parameter fields (paper-level knobs in a collapsed "advanced" section with the device, seed and dask
settings), the Run/Stop/Estimate row, progress, status and the last run's quality, laid out so
the parameters scroll and the title and the run rows stay visible."""
from __future__ import annotations

from typing import Any

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

from ..core.device import DEVICE_CHOICES
from ..core.params import ParamInfo


def _param_widget(p: ParamInfo) -> Widget:
    opts: dict[str, Any] = {"name": p.name, "label": p.name.replace("_", " "), "tooltip": p.doc}
    if p.widget in ("open_file", "save_file"):
        # nullable: an empty field stays empty (a FileEdit would otherwise show Path("") as ".")
        reading = p.widget == "open_file"  # a saved model, or a bioimage.io zip exported by us
        return FileEdit(value=p.default or None, mode="r" if reading else "w",
                        filter="*.pt *.zip" if reading else "*.pt", nullable=True, **opts)
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


def build_form(w) -> None:
    """Give the dock ``w`` (a :class:`~napari_ssl_restore._napari.widgets.RestoreWidget` with its
    ``spec``) its fields, buttons and layout, as attributes (``w.image``, ``w.params``, ...)."""
    basic, advanced = _fields(w)
    w.form = Container(widgets=[w.image, *w.inputs.values(), w.axes, *basic])
    w.advanced_form = Container(widgets=[*advanced, w.device, w.seed, w.float_output, w.scheduler,
                                         w.chunk_planes])
    _lay_out(w, _run_rows(w))


def _fields(w) -> tuple[list[Widget], list[Widget]]:
    """The input and parameter fields; returns the basic and the advanced parameters."""
    w.title = Label(value=f"<b>{w.spec.title}</b>")
    w.standing = Label(name="standing", value="", visible=False,
                       tooltip="Measured on held-out data at the default settings (the "
                               "benchmarks).")
    w.image = ComboBox(name="image", label="image", choices=w._image_choices,
                       tooltip="The image layer to restore.")
    w.inputs = {
        inp.name: ComboBox(name=inp.name, label=inp.name.replace("_", " "),
                           nullable=not inp.required, choices=w._choices_for(inp),
                           tooltip=inp.doc)
        for inp in w.spec.inputs
    }
    w.axes = LineEdit(name="axes", label="axes",
                      tooltip="One letter per dimension: T (time), Z, Y, X, C (channels). "
                              "Filled in from the layer; change it if the guess is wrong.")
    w.params = ParamWidgets((p.name, _param_widget(p)) for p in w.spec.param_info)
    basic = [w.params[p.name] for p in w.spec.param_info if not p.advanced]
    advanced = [w.params[p.name] for p in w.spec.param_info if p.advanced]
    w.export_button = None
    if "model" in w.params:  # beside the model fields: the model in `model` as a bioimage.io zip
        w.export_button = PushButton(
            name="export_bioimageio", text="Export to bioimage.io...",
            tooltip="Write the model in 'model' (after training: the model kept) as a "
                    "bioimage.io model zip for the BioImage Model Zoo, deepImageJ, ilastik and "
                    "bioimageio.core; the selected layer gives its test image. Needs "
                    "napari-ssl-restore[bioimageio].")
        fields = [f for f in (w.params.get("save_model"), w.params["model"]) if f in basic]
        if fields:
            basic.insert(basic.index(fields[0]) + 1, w.export_button)
        else:
            advanced.insert(advanced.index(w.params["model"]) + 1, w.export_button)
    w.device = ComboBox(name="device", label="device", choices=list(DEVICE_CHOICES),
                        value="auto", tooltip="auto: CUDA, then Apple MPS, then CPU.",
                        visible=w.spec.uses_torch)
    w.seed = SpinBox(name="seed", label="seed", value=0, min=0, max=2**31 - 1,
                     tooltip="Random seed: the same seed gives the same result.",
                     visible=w.spec.uses_torch)
    w.float_output = CheckBox(name="float_output", text="float32 output", value=False,
                              tooltip="Return float32 instead of the input's dtype.")
    w.scheduler = LineEdit(
        name="scheduler", label="dask scheduler",
        tooltip="Address of a running dask scheduler (tcp://host:8786). When set, Run sends "
                "the layer's planes to its workers, 'planes per task' at a time. The "
                "workers read the layer's file, or a copy in the temporary folder for "
                "layers held in memory, so they must see this machine's disk (a local or "
                "shared-disk cluster). Empty: run here.")
    w.chunk_planes = SpinBox(name="chunk_planes", label="planes per task", value=8, min=1,
                             max=1_000_000, tooltip="Entries of the first T (else Z) "
                             "axis each dask task restores.")
    return basic, advanced


def _run_rows(w) -> Container:
    """Run/Stop/Estimate/Add residual (returned, as one row), the progress bar, the status line
    and the quality verdict of the last run (shown once there is one)."""
    w.run_button = PushButton(name="run", text="Run")
    w.estimate_button = PushButton(name="estimate", text="Estimate",
                                   tooltip="Estimate the working memory and the time "
                                           "per plane (a short probe run on a crop), "
                                           "without running.")
    w.stop_button = PushButton(name="stop", text="Stop", enabled=False,
                               tooltip="Stop at the next step. Optimisation methods keep "
                                       "their best result so far; others add nothing.")
    w.progress = ProgressBar(name="progress", label="progress", value=0, min=0, max=1000)
    w.status = Label(name="status", value="ready")
    w.curve = Label(name="curve", value="", visible=False,
                    tooltip="The loss on held-out pixels the network never trains on, at each "
                            "check (lower is better): training stops once it stops improving.")
    w.quality = Label(name="quality", value="", visible=False,
                      tooltip="After a run: whether the residual (input - output) looks like "
                              "noise or holds structure, or how well the result explains the "
                              "data (provenance 'quality').")
    w.residual_button = PushButton(name="add_residual", text="Add residual", enabled=False,
                                   tooltip="Add input - output as a float32 layer (lazy for "
                                           "lazy data): noise only is good; edges and texture "
                                           "in it are signal the method removed. For outputs "
                                           "of the input's shape.")
    buttons = Container(widgets=[w.run_button, w.stop_button, w.estimate_button,
                                 w.residual_button], layout="horizontal", labels=False)
    # long titles and messages wrap, not widen
    for label in (w.title, w.standing, w.status, w.curve, w.quality):
        label.native.setWordWrap(True)
        label.native.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
    return buttons


def _lay_out(w, buttons: Container) -> None:
    """The scroll area (form, advanced section) between the title and the run rows."""
    # the parameters scroll; the title above and Run/Stop/progress/status below stay visible
    w.advanced = QCollapsible("advanced settings")
    w.advanced.setDuration(0)
    w.advanced.addWidget(w.advanced_form.native)
    body = QWidget()
    body_layout = QVBoxLayout(body)
    body_layout.setContentsMargins(0, 0, 0, 0)
    body_layout.addWidget(w.form.native)
    body_layout.addWidget(w.advanced)
    body_layout.addStretch(1)
    w.scroll = QScrollArea()
    w.scroll.setWidgetResizable(True)
    w.scroll.setFrameShape(QFrame.Shape.NoFrame)
    w.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    w.scroll.setWidget(body)
    w.advanced.toggled.connect(w._fit_width)
    layout = QVBoxLayout(w)
    for part in (w.title.native, w.standing.native, w.scroll, buttons.native, w.progress.native,
                 w.status.native, w.curve.native, w.quality.native):
        layout.addWidget(part)
