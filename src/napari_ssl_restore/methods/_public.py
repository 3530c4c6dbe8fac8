"""Build the skimage-style public function of a method from its spec (signature and docstring)."""
from __future__ import annotations

import inspect
import textwrap
from typing import Any

from ..core.registry import MethodSpec


def public_function(spec: MethodSpec, *, summary: str, notes: str = "", references: str = "",
                    examples: str = ""):
    """Return ``f(image, *, <params>, <extra inputs>, axes=None, device='auto', seed=0, ...)``.

    The keyword defaults and the Parameters section come from ``spec.params``, so documentation and
    behaviour cannot drift apart.
    """

    def function(image, **kwargs: Any):
        from ..api import restore

        return restore(image, spec.name, **kwargs)

    kw = inspect.Parameter.KEYWORD_ONLY
    sig_params = [inspect.Parameter("image", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    sig_params += [inspect.Parameter(i.name, kw, default=None) for i in spec.inputs]
    sig_params += [inspect.Parameter(p.name, kw, default=p.default, annotation=p.type)
                   for p in spec.param_info]
    sig_params += [
        inspect.Parameter("axes", kw, default=None),
        inspect.Parameter("device", kw, default="auto"),
        inspect.Parameter("seed", kw, default=0),
        inspect.Parameter("progress", kw, default=None),
        inspect.Parameter("full_output", kw, default=False),
        inspect.Parameter("float_output", kw, default=False),
    ]
    function.__signature__ = inspect.Signature(sig_params)
    function.__name__ = function.__qualname__ = spec.function
    function.__module__ = f"napari_ssl_restore.methods.{spec.name.replace('-', '_')}"

    lines = [summary, "", "Parameters", "----------",
             "image : ndarray, shape matching ``axes`` (e.g. (M, N), (M, N, 3), (T, M, N))",
             "    Input image, stack or time-lapse; never modified."]
    for inp in spec.inputs:
        lines += [f"{inp.name} : ndarray{'' if inp.required else ', optional'}",
                  *textwrap.wrap(inp.doc, 96, initial_indent="    ", subsequent_indent="    ")]
    for p in spec.param_info:
        choice = f" {{{', '.join(map(repr, p.choices))}}}" if p.choices else ""
        lines += [f"{p.name} : {p.type.__name__}{choice}, default {p.default!r}",
                  *textwrap.wrap(p.doc, 96, initial_indent="    ", subsequent_indent="    ")]
    lines += [
        "axes : str, optional",
        "    Letters from T, Z, Y, X, C, one per dimension; guessed from the shape when omitted.",
        "device : {'auto', 'cpu', 'cuda', 'mps'}",
        "    Torch device ('auto': CUDA, then MPS, then CPU).",
        "seed : int",
        "    Random seed; the same seed gives the same result.",
        "progress : callable or bool, optional",
        "    Called with each progress Step; True shows a tqdm bar.",
        "full_output : bool",
        "    Return a dict of all outputs (" + ", ".join(o.name for o in spec.outputs)
        + ") and 'provenance'.",
        "float_output : bool",
        "    Return images as float32 instead of the input's dtype.",
        "",
        "Returns",
        "-------",
        f"{spec.primary.name} : ndarray",
        f"    {spec.primary.doc}",
    ]
    for section, body in (("Notes", notes), ("References", references), ("Examples", examples)):
        if body:
            lines += ["", section, "-" * len(section), textwrap.dedent(body).strip()]
    function.__doc__ = "\n".join(lines)
    return function
