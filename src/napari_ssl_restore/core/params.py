"""Typed, documented method parameters.

Every method declares a frozen ``Params`` dataclass whose fields are made with :func:`param`, so that
each field carries its documentation and its allowed range. The widget (tooltips, spin-box limits,
drop-downs), the CLI (``--help`` and flags) and the README tables are all generated from that metadata.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

_MISSING = dataclasses.MISSING


def param(
    default: Any,
    doc: str,
    *,
    min: float | None = None,  # noqa: A002 - reads naturally at the call site
    max: float | None = None,  # noqa: A002
    choices: tuple | None = None,
    step: float | None = None,
    widget: str | None = None,
    when: dict[str, tuple] | None = None,
    advanced: bool = False,
) -> Any:
    """A dataclass field with its documentation and allowed values attached as metadata.

    ``widget`` hints the GUI: ``"open_file"`` or ``"save_file"`` for paths. ``when`` names the
    settings under which the parameter is used, e.g. ``{"task": ("sr",)}``: the widget shows it only
    then (the value is still validated and passed). ``advanced`` marks paper-level knobs (network
    size, learning rate, early-stopping window...) that the widget keeps in a collapsed section.
    """
    meta = {"doc": doc, "min": min, "max": max, "choices": choices, "step": step, "widget": widget,
            "when": dict(when or {}), "advanced": advanced}
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ParamInfo:
    """Description of one parameter, read from a ``Params`` dataclass."""

    name: str
    type: type
    default: Any
    doc: str
    min: float | None = None
    max: float | None = None
    choices: tuple | None = None
    step: float | None = None
    widget: str | None = None
    when: dict = dataclasses.field(default_factory=dict)
    advanced: bool = False

    @property
    def flag(self) -> str:
        """The CLI flag: the field name with ``_`` replaced by ``-``."""
        return "--" + self.name.replace("_", "-")

    def applies(self, settings: dict[str, Any]) -> bool:
        """Whether the parameter is used under ``settings`` (e.g. ``{"task": "sr"}``)."""
        return all(k not in settings or settings[k] in v for k, v in self.when.items())


def _resolve_type(cls: type, field: dataclasses.Field) -> type:
    hints = typing.get_type_hints(cls)
    tp = hints[field.name]
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return str
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if args else str
    return tp


def describe(cls: type) -> list[ParamInfo]:
    """Return the :class:`ParamInfo` of every field of a ``Params`` dataclass.

    Fields that decide which others apply (``task``, ``mode``) come first, then those the class
    declares itself, then those it inherits (shared settings such as a network's size), so widgets
    and help list the method's own choices at the top.
    """
    own = cls.__dict__.get("__annotations__", {})
    fields = list(dataclasses.fields(cls))
    fields = [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]
    controls = {k for f in fields for k in (f.metadata.get("when") or {})}
    fields = [f for f in fields if f.name in controls] + [f for f in fields if f.name not in controls]
    infos = []
    for f in fields:
        meta = f.metadata
        infos.append(
            ParamInfo(
                name=f.name,
                type=_resolve_type(cls, f),
                default=f.default,
                doc=meta.get("doc", ""),
                min=meta.get("min"),
                max=meta.get("max"),
                choices=meta.get("choices"),
                step=meta.get("step"),
                widget=meta.get("widget"),
                when=dict(meta.get("when") or {}),
                advanced=bool(meta.get("advanced", False)),
            )
        )
    return infos


def validate(obj: Any) -> None:
    """Check every field of a ``Params`` instance against its type, range and choices.

    Raises
    ------
    ValueError, TypeError
        With a message that names the method, the field, the bad value and how to fix it.
    """
    owner = getattr(obj, "method_title", type(obj).__qualname__)
    for info in describe(type(obj)):
        value = getattr(obj, info.name)
        where = f"{owner}: parameter {info.name!r}"
        if info.type is bool:
            if not isinstance(value, (bool,)):
                raise TypeError(f"{where} must be True or False; got {value!r}.")
            continue
        if info.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{where} must be a number; got {value!r} ({type(value).__name__}).")
            if info.type is int and int(value) != value:
                raise TypeError(f"{where} must be a whole number; got {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"{where} must be finite; got {value!r}.")
            if info.min is not None and value < info.min:
                raise ValueError(f"{where} must be >= {info.min}; got {value!r}. Use a value in "
                                 f"[{info.min}, {info.max if info.max is not None else 'inf'}].")
            if info.max is not None and value > info.max:
                raise ValueError(f"{where} must be <= {info.max}; got {value!r}. Use a value in "
                                 f"[{info.min if info.min is not None else '-inf'}, {info.max}].")
        if info.choices is not None and value not in info.choices:
            raise ValueError(f"{where} must be one of {', '.join(map(repr, info.choices))}; "
                             f"got {value!r}.")


def coerce(cls: type, name: str, text: str) -> Any:
    """Convert a command-line string to the type of field ``name`` of ``cls``."""
    info = {i.name: i for i in describe(cls)}[name]
    if info.type is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{info.flag} expects true/false; got {text!r}.")
    if info.type is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{info.flag} expects a whole number; got {text!r}.") from None
    if info.type is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{info.flag} expects a number; got {text!r}.") from None
    return text
