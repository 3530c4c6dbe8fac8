"""Noise2Void with CAREamics, for bench_n2n.py; runs in a separate environment with careamics.

usage: python n2v_careamics.py noisy.npy out.npy --seconds S
Trains N2V on the single noisy image for about S seconds (epochs sized from a timed first epoch),
predicts, saves the result and prints a JSON line with the training time.
"""
import argparse
import json
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("noisy")
ap.add_argument("out")
ap.add_argument("--seconds", type=float, required=True)
args = ap.parse_args()

from careamics import CAREamist  # noqa: E402
from careamics.config import create_n2v_configuration  # noqa: E402

noisy = np.load(args.noisy).astype(np.float32)


def make(epochs):
    cfg = create_n2v_configuration(experiment_name="n2v_bench", data_type="array", axes="YX",
                                   patch_size=[64, 64], batch_size=8, num_epochs=epochs)
    return CAREamist(source=cfg)


t0 = time.perf_counter()
probe = make(1)
probe.train(train_source=noisy)
first = time.perf_counter() - t0
epochs = max(1, int(args.seconds / max(first, 1e-3)))
t0 = time.perf_counter()
model = make(epochs)
model.train(train_source=noisy)
train_seconds = time.perf_counter() - t0
pred = model.predict(source=noisy, tile_size=(128, 128), tile_overlap=(48, 48))
pred = np.squeeze(np.asarray(pred[0] if isinstance(pred, list) else pred))
np.save(args.out, pred.astype(np.float32))
print(json.dumps({"train_seconds": train_seconds, "info": f"{epochs} epochs"}))
