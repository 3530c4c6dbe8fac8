"""The ``napari-ssl-restore`` command: ``list``, ``run METHOD INPUT -o OUTPUT``, ``batch METHOD
INPUT... -o OUTDIR`` (dask.distributed), ``analyse FILE`` (the restore assistant), ``demo`` and
``export-bioimageio MODEL OUT.zip`` (a saved model as a bioimage.io model zip).

Built from the registry: every method gets a ``run`` sub-command whose flags are its ``Params`` fields
(``_`` -> ``-``) and its extra inputs (``--mask FILE``, ``--psf FILE`` ...). Bad input ends with exit
status 2 and a single ``error: ...`` line on stderr.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse API
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .core.registry import all_methods

    parser = _Parser(prog="napari-ssl-restore",
                     description="Self-supervised image and video restoration for microscopy.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser,
                                metavar="{list,run,batch,analyse,demo,export-bioimageio}")
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
        _add_run_settings(mp, "axes of INPUT, e.g. YX, ZYX, TYX, YXC (default: from the file's "
                              "metadata, else guessed from the shape)")
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
                            metavar="FILE_OR_GLOB" if inp.examples else "FILE",
                            required=inp.required,
                            help=_help(f"TIFF files (a file, a folder or a quoted glob): {inp.doc}"
                                       if inp.examples else f"TIFF or zarr file: {inp.doc}"))
        _add_params(mp, spec)

    batch = sub.add_parser(
        "batch", help="restore many files, or one long stack in chunks, on dask.distributed",
        description="Restore many files (or globs), or a long TIFF/OME-Zarr in chunks of planes, "
                    "as dask.distributed tasks: on a running cluster (--scheduler) or a "
                    "LocalCluster started here. Reruns skip complete outputs.")
    bmethods = batch.add_subparsers(dest="method", parser_class=_Parser, metavar="METHOD")
    bmethods.required = True
    for spec in all_methods():
        mp = bmethods.add_parser(spec.name, help=spec.title, description=spec.title)
        mp.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="files (.tif/.ome.tif/.zarr/.ome.zarr) or quoted globs ('raw/*.tif')")
        mp.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                        help="output folder (made if missing): <stem>_<method>.<suffix> per "
                             "file; one <stem>_<method>.ome.zarr per chunked stack")
        where = mp.add_mutually_exclusive_group()
        where.add_argument("--scheduler", metavar="ADDRESS",
                           help="a running dask scheduler (tcp://host:8786); default: start a "
                                "LocalCluster")
        where.add_argument("--workers", type=int, metavar="N",
                           help="LocalCluster workers (default: one per GPU, else one per "
                                "core, at most 8); torch threads are split between them")
        mp.add_argument("--chunk-planes", type=int, metavar="N",
                        help="split each input into chunks of N entries of its first T (else Z) "
                             "axis, written into one OME-Zarr store")
        mp.add_argument("--train-per-chunk", action="store_true",
                        help="allow chunks of methods that train on the whole stack (each chunk "
                             "then trains on its own planes)")
        _add_run_settings(mp, "axes of every INPUT (default: each file's metadata)")
        mp.add_argument("--overwrite", action="store_true",
                        help="redo outputs that exist (default: skip those complete from an "
                             "earlier run with the same settings)")
        for inp in spec.inputs:
            if not inp.like_image:  # a per-input second acquisition cannot be batched
                mp.add_argument(f"--{inp.name.replace('_', '-')}", dest=f"input_{inp.name}",
                                metavar="FILE_OR_GLOB" if inp.examples else "FILE",
                                required=inp.required,
                                help=_help(f"used for every input: {inp.doc}"))
        _add_params(mp, spec)

    an = sub.add_parser("analyse", help="describe an image's noise, blur, haze and motion and "
                                        "recommend methods (reads a bounded sample)")
    an.add_argument("input", metavar="FILE", help="TIFF/OME-TIFF/zarr/OME-Zarr file")
    an.add_argument("--axes", default=None, metavar="AXES",
                    help="axes of FILE, e.g. YX, TYX, YXC (default: from metadata, else guessed)")
    an.add_argument("--second", default=None, metavar="FILE",
                    help="a second acquisition of the same field (for Noise2Noise)")
    an.add_argument("--json", action="store_true", help="print the analysis as JSON")
    an.add_argument("--quick", action="store_true",
                    help="skip the measurements on the data (timing probes, J-invariant scores "
                         "of the denoisers): rough times, recommendations in a fixed order")

    demo = sub.add_parser("demo", help="run the methods on bundled/synthetic data and write TIFFs "
                                       "and a PNG comparison figure (no network, no display)")
    demo.add_argument("-o", "--output", default="napari-ssl-restore-demo",
                      help="output folder (default: ./napari-ssl-restore-demo)")
    demo.add_argument("--methods", nargs="+", metavar="METHOD",
                      help="only these methods (default: all)")
    demo.add_argument("--device", default="auto", help="torch device (default: auto)")

    ex = sub.add_parser(
        "export-bioimageio", help="export a saved model as a bioimage.io model zip (BioImage "
                                  "Model Zoo)",
        description="Write a model this plugin saved as a bioimage.io model zip (model format "
                    "0.5: TorchScript and state-dict weights, test images, README, cover) that "
                    "`bioimageio test` passes and bioimage.io software (deepImageJ, ilastik, "
                    "bioimageio.core) runs. Needs `pip install \"napari-ssl-restore[bioimageio]\"`.")
    ex.add_argument("model", metavar="MODEL",
                    help="a .pt saved by this plugin (--save-model), a shipped model's name, or "
                         "'' for the shipped denoiser")
    ex.add_argument("output", metavar="OUT.zip", help="the zip to write")
    ex.add_argument("--name", help="the model's name on bioimage.io (5-128 letters, digits, "
                                   "spaces and _+-(); default: from the method)")
    ex.add_argument("--sample", metavar="FILE",
                    help="an image (TIFF/zarr) whose middle plane, cropped to at most 256x256, is "
                         "the test input (default: a synthetic field)")
    ex.add_argument("--axes", metavar="AXES", help="axes of the --sample file, e.g. YX, ZYX, YXC")
    ex.add_argument("--overwrite", action="store_true", help="replace OUT.zip if it exists")
    return parser


def _add_run_settings(parser: argparse.ArgumentParser, axes_help: str) -> None:
    """``--axes``, ``--device``, ``--seed`` and ``--float``: what every run takes."""
    from .core.device import DEVICE_CHOICES

    parser.add_argument("--axes", help=axes_help)
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES + tuple(
        f"cuda:{i}" for i in range(8)), help="torch device (default: auto)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--float", dest="float_output", action="store_true",
                        help="write float32 instead of the input's dtype")


def _add_params(parser: argparse.ArgumentParser, spec) -> None:
    """One ``--flag VALUE`` per field of the method's ``Params``."""
    group = parser.add_argument_group(f"{spec.name} parameters")
    for p in spec.param_info:
        extra = f" One of: {', '.join(map(str, p.choices))}." if p.choices else ""
        group.add_argument(p.flag, dest=f"param_{p.name}", metavar="VALUE", default=None,
                           help=_help(f"{p.doc}{extra} (default: {p.default})"))


def _help(text: str) -> str:
    """Help text for argparse, which treats ``%`` as a format character."""
    return text.replace("%", "%%")


def _cmd_list() -> int:
    from .core.registry import all_methods

    for spec in all_methods():
        print(spec.name)
        print(f"    {spec.title}")
    return 0


def _cmd_analyse(args: argparse.Namespace) -> int:
    import json

    from .assistant import analyse
    from .estimate import duration

    for path in (args.input, args.second):
        if path is not None and not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist; give the path of an image file.")
    result = analyse(args.input, args.axes, second=args.second, measure=not args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    noise = result["noise"]
    rows = [("noise", f"{noise['model']}, sigma {noise['sigma']:.4g} (a={noise['a']:.3g}, "
                      f"b={noise['b']:.3g}){', correlated' if noise['correlated'] else ''}"),
            ("blur sigma", "none" if result["blur_sigma"] is None
             else f"{result['blur_sigma']:.3g} px"),
            ("haze score", f"{result['haze']['score']:.2f}"),
            ("clipped", f"{100 * result['clipped']:.2f} %")]
    if result["time"]:
        rows.append(("motion", f"{result['time']['motion_px']:.3g} px, frame similarity "
                               f"{result['time']['similarity']:.2f}"))
    if result["second"]:
        sec = result["second"]
        rows.append(("second", f"registered {sec['registered']}, independent noise "
                               f"{sec['independent_noise']}"))
    for k, v in rows:
        print(f"{k:<12} {v}")
    print(result["summary"])
    for i, rec in enumerate(result["recommendations"], 1):
        params = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in rec["params"].items())
        how = "measured" if rec.get("seconds_measured") else "rough"
        score = rec.get("score")
        judged = "" if not score else (f" [J-invariant loss {score['j_invariant_loss']:.3g}, "
                                       f"noise variance {score['noise_variance']:.3g}]")
        print(f"{i}. {rec['method']} {params} (~{duration(rec['expected_seconds'])}, {how}): "
              f"{rec['why']}{judged}")
    if not result["recommendations"]:
        print("no restoration recommended")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import output_files, prepare, write_files
    from .core.io import check_outputs, split_suffix
    from .core.registry import get_method
    from .engine.planes import open_input

    spec = get_method(args.method)
    try:
        split_suffix(args.output)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    kwargs = dict(_params_from(args, spec), **_inputs_from(args, spec))
    data, axes = open_input(args.input, args.axes, video=spec.video)  # read plane by plane
    job = prepare(data, spec.name, axes=axes, device=args.device, seed=args.seed,
                  float_output=args.float_output, **kwargs)
    # every file this run writes, checked before any work
    files = output_files(job, args.output, all_outputs=args.all_outputs)
    check_outputs(list(files.values()), inputs=[args.input, *_inputs_from(args, spec).values()],
                  overwrite=args.overwrite)
    if args.dry_run:
        from .estimate import estimate

        print(f"{args.input}: {tuple(data.shape)} {data.dtype}, axes {job.layout.axes}, read "
              "plane by plane")
        for line in estimate(job, outputs_in_memory=False).lines():
            print(line)
        print("would write " + ", ".join(files.values()))
        return 0
    standing = spec.standing_of(job.params)
    if standing:
        print(f"note: {standing}", file=sys.stderr)
    with tqdm(total=100, desc=spec.name, unit="%", file=sys.stderr, leave=False,
              disable=None) as bar:
        def progress(step):
            bar.n = round(100 * step.fraction)
            bar.set_postfix_str(step.message, refresh=True)

        record: dict = {}
        written = write_files(job, files, input_path=args.input, progress=progress,
                              record=record)
    print("wrote " + ", ".join(written))
    _print_quality(record.get("quality"))
    return 0


QUALITY_NUMBERS = ("noise_ratio", "coarse_power", "signal_correlation", "whiteness",
                   "physics_residual")
"""The quality numbers printed after a denoiser's verdict, which reads them all."""
JUDGED_BY_PHYSICS = ("physics_residual",)
"""The numbers printed for other tasks: their residual holds structure by design, so the
residual's look (noise ratio, whiteness, ...) says nothing about them."""


def _print_quality(quality: dict | None) -> None:
    """The run's quality verdict and the numbers it reads, briefly, on stderr."""
    from .engine.judge import DENOISE_TASKS

    if not quality:
        return
    print(f"quality: {quality['verdict']}", file=sys.stderr)
    names = QUALITY_NUMBERS if quality.get("task") in DENOISE_TASKS else JUDGED_BY_PHYSICS
    numbers = ", ".join(f"{k} {quality[k]:.3g}" for k in names if k in quality)
    if numbers:
        print(f"quality: {numbers}", file=sys.stderr)


def _params_from(args: argparse.Namespace, spec) -> dict:
    """The method's parameters given on the command line, as typed values."""
    from .core.params import coerce

    kwargs = {}
    for p in spec.param_info:
        text = getattr(args, f"param_{p.name}")
        if text is not None:
            kwargs[p.name] = coerce(spec.params, p.name, text)
    return kwargs


def _inputs_from(args: argparse.Namespace, spec) -> dict[str, str]:
    """The method's extra inputs given on the command line (files or globs), by name: read and
    checked by the front door (:func:`napari_ssl_restore.engine.request.check_request`)."""
    paths = {inp.name: getattr(args, f"input_{inp.name}", None) for inp in spec.inputs}
    return {name: path for name, path in paths.items() if path is not None}


def _cmd_batch(args: argparse.Namespace) -> int:
    from .batching import batch
    from .core.registry import get_method

    spec = get_method(args.method)
    kwargs = dict(_params_from(args, spec), **_inputs_from(args, spec))
    summary = batch(args.inputs, spec.name, args.output, scheduler=args.scheduler,
                    workers=args.workers, chunk_planes=args.chunk_planes, axes=args.axes,
                    device=args.device, seed=args.seed, float_output=args.float_output,
                    overwrite=args.overwrite, train_per_chunk=args.train_per_chunk, **kwargs)
    print(summary.table())
    for r in summary.failed:
        print(f"error: {r.unit}: {r.error}", file=sys.stderr)
    return 0 if summary.ok else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_bioimageio

    if args.sample is not None and not os.path.exists(args.sample):
        raise FileNotFoundError(f"{args.sample} does not exist; give the path of an image file.")
    try:
        path = export_bioimageio(args.model, args.output, args.sample, name=args.name,
                                 axes=args.axes, overwrite=args.overwrite)
    except ImportError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {path}")
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
        if args.command == "batch":
            return _cmd_batch(args)
        if args.command == "analyse":
            return _cmd_analyse(args)
        if args.command == "export-bioimageio":
            return _cmd_export(args)
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
