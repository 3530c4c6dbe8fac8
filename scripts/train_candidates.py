#!/usr/bin/env python
"""Train several denoiser candidates side by side on one budget, and tabulate their held-out scores.

The video-quality issue asks for the shipped denoiser's size to be chosen by measurement: DnCNN
12×32 (today's), 17×64 (the paper's DnCNN-S) and a small U-Net (plain, and predicting the noise),
trained on the same data for the same wall-clock time. A lent GPU gives a session about 15 minutes
in all, machine start included, which four trainings one after another would not fit; so this
launcher runs them **at the same time**, each a ``scripts/train_denoiser.py`` process of its own on
the same device (one of these small networks leaves most of the GPU idle), and waits for all of
them. Each writes its checkpoint (held-out PSNR, recipe, steps and seconds in its provenance) and
its log; the launcher then prints a Markdown table and writes ``candidates.json``.

    python scripts/train_candidates.py --device cuda --time-budget 300 --threads 4 \\
        --out-dir $OUT -- --package-images --pg-fraction 0.5 --noise-on-device
    python scripts/train_candidates.py --time-budget 60 --out-dir /tmp/c   # a CPU smoke run

On a lent H200 (one ``run`` call of about 7 minutes, machine start not counted; the logs kept out
of ``$OUT``, which returns at most 8 files; PyWavelets is not installed there, so carry its wheel
for ``aero`` and ``ascent``: ``pip download --no-deps --only-binary=:all: --python-version 3.12
--platform manylinux_2_17_x86_64 -d .whl PyWavelets==1.8.0``, then name ``.whl`` in ``carry``)::

    pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONUNBUFFERED=1 PYTHONPATH=src:/tmp/site python3 scripts/train_candidates.py \\
        --device cuda --time-budget 300 --threads 4 --out-dir $OUT --log-dir /tmp/logs -- \\
        --package-images --pg-fraction 0.5 --noise-on-device

Everything after ``--`` goes to every run unchanged (the data mix: ``--package-images``,
``--fields``, ``--pg-fraction`` ...). Then, on any machine, ``python benchmarks/bench_dncnn.py
--model <checkpoint>`` compares a candidate with BM3D, and ``python scripts/train_denoiser.py
--install <checkpoint> --name NEW-NAME`` ships the one chosen (a shipped name keeps its weights).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CANDIDATES = ("dncnn:32x12", "dncnn:64x17", "unet:32x4", "unet-res:32x4")
"""``arch:FEATURESxDEPTH`` (DnCNN depth = layers, U-Net depth = levels)."""


def parse_candidate(spec: str) -> tuple[str, int, int]:
    """``"unet:32x4"`` -> ``("unet", 32, 4)``, with a clear error for anything else."""
    try:
        arch, size = spec.split(":")
        features, depth = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SystemExit(f"candidate {spec!r}: write it as ARCH:FEATURESxDEPTH, e.g. unet:32x4") \
            from None
    if arch not in ("dncnn", "unet", "unet-res") or features < 1 or depth < 1:
        raise SystemExit(f"candidate {spec!r}: the architecture is dncnn, unet or unet-res, sizes "
                         "positive")
    return arch, features, depth


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candidates", default=",".join(CANDIDATES),
                    help="comma-separated ARCH:FEATURESxDEPTH (default: %(default)s)")
    ap.add_argument("--time-budget", type=float, required=True,
                    help="seconds of training for each candidate (they run at the same time)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads for each run")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--log-dir", default="",
                    help="each run's log (default: --out-dir); the tail of a failed run's log is "
                         "printed")
    args = ap.parse_args(argv)
    specs = [parse_candidate(s) for s in args.candidates.split(",") if s.strip()]
    log_dir = args.log_dir or args.out_dir
    for folder in (args.out_dir, log_dir):
        os.makedirs(folder, exist_ok=True)

    procs, t0 = [], time.time()
    for arch, features, depth in specs:
        name = f"{arch}_{features}x{depth}"
        cmd = [sys.executable, os.path.join(HERE, "train_denoiser.py"), "--arch", arch,
               "--features", str(features), "--depth", str(depth),
               "--time-budget", str(args.time_budget), "--device", args.device,
               "--threads", str(args.threads), "--batch-size", str(args.batch_size),
               "--seed", str(args.seed), "--out", os.path.join(args.out_dir, name + ".pt"), *extra]
        log = open(os.path.join(log_dir, name + ".log"), "w")
        print(f"starting {name}: {' '.join(cmd[1:])}", flush=True)
        procs.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
    failed = []
    for name, proc, log in procs:
        if proc.wait() != 0:
            failed.append(name)
        log.close()
    print(f"all runs ended after {time.time() - t0:.0f} s", flush=True)

    from napari_ssl_restore.core.models import build, load_checkpoint

    rows = {}
    for name, _proc, _log in procs:
        path = os.path.join(args.out_dir, name + ".pt")
        if name in failed or not os.path.exists(path):
            with open(os.path.join(log_dir, name + ".log")) as f:
                tail = f.readlines()[-20:]
            print(f"{name}: FAILED; the end of its log:\n" + "".join(tail))
            continue
        ckpt = load_checkpoint(path)
        prov = ckpt["provenance"]
        rows[name] = {"parameters": sum(p.numel() for p in build(ckpt).parameters()),
                      "steps": prov["recipe"]["steps"], "train_seconds": prov["train_seconds"],
                      "train_device": prov["train_device"], "held_out_psnr": prov["held_out_psnr"]}
    keys = sorted({k for r in rows.values() for k in r["held_out_psnr"]},
                  key=lambda k: (k.startswith("pg"), float(k.lstrip("pg"))))
    print("\n| candidate | parameters | steps | seconds | " + " | ".join(keys) + " |")
    print("|---|---|---|---|" + "---|" * len(keys))
    for name, r in rows.items():
        print(f"| {name} | {r['parameters']:,} | {r['steps']} | {r['train_seconds']} | "
              + " | ".join(f"{r['held_out_psnr'][k]:.2f}" for k in keys) + " |")
    with open(os.path.join(args.out_dir, "candidates.json"), "w") as f:
        json.dump({"time_budget": args.time_budget, "device": args.device, "extra": extra,
                   "candidates": rows, "failed": failed}, f, indent=2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
