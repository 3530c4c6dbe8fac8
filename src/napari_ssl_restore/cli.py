"""The ``napari-ssl-restore`` command: ``list``, ``run METHOD INPUT -o OUTPUT`` and ``demo``.

Built from the registry: every method gets a ``run`` sub-command whose flags are its ``Params`` fields
(``_`` -> ``-``) and its extra inputs (``--mask FILE``, ``--psf FILE`` ...). Bad input ends with exit
status 2 and a single ``error: ...`` line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .core.device import DEVICE_CHOICES
    from .core.registry import all_methods

    parser = _Parser(prog="napari-ssl-restore",
                     description="Self-supervised image and video restoration for microscopy.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="{list,run,demo}")
    sub.required = True

    sub.add_parser("list", help="list the methods, one name per line with its title")

    run = sub.add_parser("run", help="restore a TIFF file with one method")
    methods = run.add_subparsers(dest="method", parser_class=_Parser, metavar="METHOD")
    methods.required = True
    for spec in all_methods():
        mp = methods.add_parser(spec.name, help=spec.title, description=spec.title)
        mp.add_argument("input", metavar="INPUT",
                        help="input .tif/.ome.tif or .zarr/.ome.zarr (read plane by plane)")
        mp.add_argument("-o", "--output", required=True,
                        help="output .tif/.ome.tif (BigTIFF when large) or .zarr/.ome.zarr "
                             "(OME-Zarr, one chunk per plane), written plane by plane")
        mp.add_argument("--axes", help="axes of INPUT, e.g. YX, ZYX, TYX, YXC (default: from the "
                                       "file's metadata, else guessed from the shape)")
        mp.add_argument("--device", default="auto", choices=DEVICE_CHOICES + tuple(
            f"cuda:{i}" for i in range(8)), help="torch device (default: auto)")
        mp.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
        mp.add_argument("--float", dest="float_output", action="store_true",
                        help="write float32 instead of the input's dtype")
        mp.add_argument("--all-outputs", action="store_true",
                        help="also write every secondary output as OUTPUT_<name> (same format)")
        mp.add_argument("--dry-run", action="store_true",
                        help="check everything, print the planes, the files, the estimated "
                             "working memory and time per plane, and stop without writing")
        mp.add_argument("--overwrite", action="store_true",
                        help="replace OUTPUT (and OUTPUT_<name>.tif) if they exist; the input is "
                             "never overwritten")
        for inp in spec.inputs:
            mp.add_argument(f"--{inp.name.replace('_', '-')}", dest=f"input_{inp.name}",
                            metavar="FILE", required=inp.required,
                            help=_help(f"TIFF or zarr file: {inp.doc}"))
        group = mp.add_argument_group(f"{spec.name} parameters")
        for p in spec.param_info:
            extra = f" One of: {', '.join(map(str, p.choices))}." if p.choices else ""
            group.add_argument(p.flag, dest=f"param_{p.name}", metavar="VALUE", default=None,
                               help=_help(f"{p.doc}{extra} (default: {p.default})"))

    demo = sub.add_parser("demo", help="run the methods on bundled/synthetic data and write TIFFs "
                                       "and a PNG comparison figure (no network, no display)")
    demo.add_argument("-o", "--output", default="napari-ssl-restore-demo",
                      help="output folder (default: ./napari-ssl-restore-demo)")
    demo.add_argument("--methods", nargs="+", metavar="METHOD",
                      help="only these methods (default: all)")
    demo.add_argument("--device", default="auto", help="torch device (default: auto)")
    return parser


def _help(text: str) -> str:
    """Help text for argparse, which treats ``%`` as a format character."""
    return text.replace("%", "%%")


def _cmd_list() -> int:
    from .core.registry import all_methods

    for spec in all_methods():
        print(spec.name)
        print(f"    {spec.title}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import execute, prepare
    from .core.io import (FileStores, atomic_paths, check_outputs, choose_axes, read_image,
                          split_suffix)
    from .core.params import coerce
    from .core.progress import drive
    from .core.registry import get_method
    from .engine.planes import open_array

    spec = get_method(args.method)
    try:
        base, suffix = split_suffix(args.output)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    kwargs = {}
    for p in spec.param_info:
        text = getattr(args, f"param_{p.name}")
        if text is not None:
            kwargs[p.name] = coerce(spec.params, p.name, text)
    inputs = [args.input]
    for inp in spec.inputs:
        path = getattr(args, f"input_{inp.name}")
        if path is not None:
            inputs.append(path)
    params = spec.make_params(**kwargs)
    primary = spec.primary_name(params)
    # every file this run writes, checked before any work: the primary output and, with
    # --all-outputs, each other per-plane output as OUTPUT_<name>.<suffix>
    names = [primary] + ([o.name for o in spec.outputs if o.kind != "value" and o.name != primary]
                         if args.all_outputs else [])
    files = {name: args.output if name == primary else f"{base}_{name}{suffix}" for name in names}
    check_outputs(list(files.values()), inputs=inputs, overwrite=args.overwrite)
    data, stated = open_array(args.input)  # read lazily, plane by plane
    axes = args.axes or choose_axes(tuple(data.shape), stated, video=spec.video,
                                    source=args.input)
    for inp in spec.inputs:
        path = getattr(args, f"input_{inp.name}")
        if path is not None:  # a second acquisition streams like the image; masks are small
            kwargs[inp.name] = open_array(path)[0] if inp.like_image else read_image(path)[0]
    job = prepare(data, spec.name, axes=axes, device=args.device, seed=args.seed,
                  float_output=args.float_output, **kwargs)
    if args.dry_run:
        from .engine.estimate import estimate

        print(f"{args.input}: {tuple(data.shape)} {data.dtype}, axes {job.layout.axes}, read "
              "plane by plane")
        for line in estimate(job, outputs_in_memory=False).lines():
            print(line)
        print("would write " + ", ".join(files.values()))
        return 0
    written = []
    with atomic_paths(list(files.values())) as temps, \
            tqdm(total=100, desc=spec.name, unit="%", file=sys.stderr, leave=False,
                 disable=None) as bar:
        stores = FileStores(dict(zip(files, temps)),
                            {name: split_suffix(path)[1] for name, path in files.items()})

        def progress(step):
            bar.n = round(100 * step.fraction)
            bar.set_postfix_str(step.message, refresh=True)

        outputs = drive(execute(job, stores=stores, keep=names, previews=False),
                        progress=progress)
        prov = dict(outputs["provenance"], input=os.path.abspath(args.input))
        stores.close(prov, primary)
        written = [files[name] for name in names if name in stores.paths and name in outputs]
    print("wrote " + ", ".join(written))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    for line in run_demo(args.output, methods=args.methods, device=args.device):
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from .core.progress import Cancelled

    try:
        args = _build_parser().parse_args(argv)
        if args.command == "list":
            return _cmd_list()
        if args.command == "run":
            return _cmd_run(args)
        return _cmd_demo(args)
    except (UsageError, ValueError, TypeError, FileNotFoundError, IsADirectoryError,
            PermissionError, Cancelled) as exc:
        if os.environ.get("NAPARI_SSL_RESTORE_DEBUG"):
            raise
        msg = " ".join(str(exc).split())
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
