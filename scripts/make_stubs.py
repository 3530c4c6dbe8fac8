"""Write ``src/napari_ssl_restore/__init__.pyi``: every public signature, for editors and type checkers.

The package builds its per-method functions at run time (``dehaze_dcp``, ``restore_dip``...: their
signatures come from each method's ``Params``), so tools that read code see nothing of them. This
script writes them out from the registry, with each ``Params`` field's own type (``Literal`` choices
included) and default, plus :func:`restore`, :func:`list_methods`, :func:`batch` and :func:`analyse`
as declared in ``api.py``, ``batching.py`` and ``assistant.py``. ``full_output=True`` returns a
dict, otherwise an array: each function gets the three overloads that say so.

Usage::

    python scripts/make_stubs.py            # (re)write the stub
    python scripts/make_stubs.py --check    # exit 1 when the committed stub is not current

``tests/test_registry_lists.py`` regenerates the stub in memory and compares.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import inspect
import sys
import textwrap
import typing
from pathlib import Path

import napari_ssl_restore

STUB = Path(napari_ssl_restore.__file__).with_suffix(".pyi")
WIDTH = 105

# where each name the stub uses comes from: ``from <module> import <name>``, or a whole import line
FROM: dict[str, str] = {
    "Any": "typing", "Literal": "typing", "TypeAlias": "typing", "overload": "typing",
    "Callable": "collections.abc", "Mapping": "collections.abc", "Sequence": "collections.abc",
    "Step": ".core.progress", "BatchSummary": ".batching", "UnitResult": ".batching",
}
MODULES: dict[str, str] = {"os": "import os", "np": "import numpy as np",
                           "npt": "import numpy.typing as npt"}
BUILTIN = {"str", "int", "float", "bool", "list", "dict", "tuple", "type", "object", "_Image",
           "_Examples"}
ALIASES = [
    '_Image: TypeAlias = npt.ArrayLike | str | os.PathLike[str]',
    '"""An array (numpy, dask, zarr), or a TIFF/OME-TIFF/zarr/OME-Zarr path."""',
    '_Examples: TypeAlias = npt.ArrayLike | Sequence[npt.ArrayLike] | str | os.PathLike[str]',
    '"""Example images: an array, a list of arrays, or a TIFF file, folder or glob."""',
]
RETURNS = {False: "np.ndarray", True: "dict[str, Any]", None: "np.ndarray | dict[str, Any]"}


def _type(tp) -> str:
    """Source text of a resolved annotation (``int``, ``Literal["a", "b"]``, ``str | None``)."""
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "Literal[" + ", ".join(_value(a) for a in args) + "]"
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " | ".join(_type(a) for a in args)
    if isinstance(tp, type) and not args:
        return tp.__name__
    raise TypeError(f"cannot write the annotation {tp!r} in the stub; extend _type().")


def _value(v) -> str:
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if v is None or isinstance(v, (bool, int, float)):
        return repr(v)
    raise TypeError(f"cannot write the default {v!r} in the stub.")


def _param(p: inspect.Parameter, annotation: str | None) -> str:
    text = p.name if annotation is None else f"{p.name}: {annotation}"
    if p.kind is p.VAR_KEYWORD:
        return "**" + text
    if p.default is not p.empty:
        text += f"={_value(p.default)}" if annotation is None else f" = {_value(p.default)}"
    return text


def _def(name: str, params: list[str], returns: str, *, overload: bool) -> list[str]:
    """``def name(...) -> returns: ...`` wrapped at :data:`WIDTH`."""
    head = f"def {name}("
    one = head + ", ".join(params) + f") -> {returns}: ..."
    lines = ["@overload"] if overload else []
    if len(one) <= WIDTH:
        return lines + [one]
    lines.append(head)
    row = "   "
    for text in params:
        if len(row) + 1 + len(text) + 1 > WIDTH:
            lines.append(row)
            row = "   "
        row += " " + text + ","
    return lines + [row, f") -> {returns}: ..."]


def _signature(func, annotate) -> list[tuple[inspect.Parameter, str | None, bool]]:
    """``(parameter, annotation text, keyword-only)`` of ``func``'s parameters."""
    return [(p, annotate(p), p.kind is p.KEYWORD_ONLY)
            for p in inspect.signature(func).parameters.values()]


def _overloads(name: str, sig, returns: str) -> list[str]:
    """The function with a bool ``full_output``: one overload per value and one for ``bool``;
    without ``full_output``: one plain def returning ``returns``."""
    def texts(full):
        out, star = [], False
        for p, ann, kw_only in sig:
            if kw_only and not star:
                out.append("*")
                star = True
            if p.name == "full_output" and full is not None:
                lit = f"Literal[{full}]"
                out.append(f"full_output: {lit} = False" if full is False else f"full_output: {lit}")
            else:
                out.append(_param(p, ann))
        return out

    if not any(p.name == "full_output" for p, _, _ in sig):
        return _def(name, texts(None), returns, overload=False)
    lines: list[str] = []
    for full in (False, True, None):
        lines += _def(name, texts(full), RETURNS[full], overload=True)
    return lines


def _text(annotation) -> str | None:
    """An annotation as the source wrote it (a string under ``from __future__ import annotations``)."""
    if annotation is inspect.Parameter.empty:
        return None
    return annotation if isinstance(annotation, str) else _type(annotation)


def _api_lines() -> list[str]:
    """:func:`list_methods`, :func:`restore`, :func:`batch`, :func:`analyse` and
    :func:`export_bioimageio` as their modules declare them."""
    from napari_ssl_restore import api, assistant, batching, export

    def annotate(p: inspect.Parameter) -> str | None:
        if p.name == "second":
            return "_Image | None"
        return "_Image" if p.name == "data" else _text(p.annotation)

    lines: list[str] = []
    for name, func in (("list_methods", api.list_methods), ("restore", api.restore),
                       ("batch", batching.batch), ("analyse", assistant.analyse),
                       ("export_bioimageio", export.export_bioimageio)):
        returns = _text(inspect.signature(func).return_annotation) or "Any"
        lines += _overloads(name, _signature(func, annotate), returns)
    return lines


def _method_lines(spec) -> list[str]:
    """A method's public function: its inputs, its ``Params`` fields (their own types, ``Literal``
    choices included) and the run options it passes to :func:`restore` (typed as there)."""
    from napari_ssl_restore import api

    fn = getattr(napari_ssl_restore, spec.function)
    hints = typing.get_type_hints(spec.params)
    inputs = {i.name: i for i in spec.inputs}
    run_options = inspect.signature(api.restore).parameters

    def annotate(p: inspect.Parameter) -> str | None:
        if p.name == "image":
            return "_Image"
        if p.name in inputs:
            return ("_Examples" if inputs[p.name].examples else "_Image") + " | None"
        if p.name in hints:
            return _type(hints[p.name])
        ann = _text(run_options[p.name].annotation) if p.name in run_options else None
        if ann is None:
            raise TypeError(f"{spec.function}: no type known for parameter {p.name!r}; "
                            "annotate it in api.restore or extend scripts/make_stubs.py.")
        return ann

    return _overloads(spec.function, _signature(fn, annotate), "np.ndarray")


def _imports(body: str) -> str:
    """The import block for every name ``body`` uses (an unknown name is an error)."""
    used = {n.id for n in ast.walk(ast.parse(body))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - BUILTIN
    unknown = sorted(used - FROM.keys() - MODULES.keys())
    if unknown:
        raise NameError(f"the stub uses {', '.join(unknown)}: say where from in FROM or MODULES "
                        "(scripts/make_stubs.py).")
    froms: dict[str, list[str]] = {}
    for name in sorted(used & FROM.keys()):
        froms.setdefault(FROM[name], []).append(name)

    def block(local: bool, third_party: bool) -> list[str]:
        plain = sorted(MODULES[n] for n in used & MODULES.keys()
                       if MODULES[n].startswith("import numpy") == third_party and not local)
        return plain + [f"from {m} import {', '.join(ns)}" for m, ns in sorted(froms.items())
                        if m.startswith(".") == local and not third_party]

    blocks = [b for b in (block(False, False), block(False, True), block(True, False)) if b]
    return "\n\n".join("\n".join(b) for b in blocks)


def render() -> str:
    """The stub's text."""
    from napari_ssl_restore.core.registry import all_methods

    body = ["__version__: str", "__all__ = ["]
    body += [f'    "{n}",' for n in napari_ssl_restore.__all__] + ["]", ""]
    body += ALIASES + [""] + _api_lines()
    for spec in all_methods():
        body += ["", *textwrap.wrap(f"{spec.name}: {spec.title}", WIDTH, initial_indent="# ",
                                    subsequent_indent="#   ")]
        body += _method_lines(spec)
    text = "\n".join(body) + "\n"
    return ("# Generated by scripts/make_stubs.py from the method registry: do not edit.\n"
            "# Regenerate with `python scripts/make_stubs.py` (a test checks it is current).\n"
            + _imports(text) + "\n\n" + text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="exit 1 (printing the difference) when the stub on disk is not current")
    args = ap.parse_args(argv)
    text = render()
    if args.check:
        old = STUB.read_text(encoding="utf-8") if STUB.exists() else ""
        if old == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                                   str(STUB), "regenerated"))
        print(f"{STUB} is out of date: run python scripts/make_stubs.py", file=sys.stderr)
        return 1
    STUB.write_text(text, encoding="utf-8")
    print(f"wrote {STUB}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
