"""Noise2Void with CAREamics (0.3.x API), for bench_n2n.py; runs in a separate environment.

usage: python n2v_careamics.py noisy.npy out.npy --seconds S
Trains N2V on the single noisy image for S seconds of wall-clock time (Lightning's max_time),
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
from careamics.config import create_advanced_n2v_config  # noqa: E402

noisy = np.load(args.noisy).astype(np.float32)


def make(seconds: float):
    # Lightning stops on the wall-clock budget; in-process data loading (worker processes hung or
    # died on this 2-core machine)
    secs = max(1, int(round(seconds)))
    max_time = f"00:00:{secs // 60:02d}:{secs % 60:02d}"
    cfg = create_advanced_n2v_config(experiment_name="n2v_bench", data_type="array", axes="YX",
                                     patch_size=[64, 64], batch_size=8, num_epochs=100_000,
                                     n_val_patches=2, num_workers=0, seed=1,
                                     trainer_params={"max_time": max_time})
    return CAREamist(cfg, enable_progress_bar=False)


t0 = time.perf_counter()
model = make(args.seconds)
model.train(train_data=noisy)
train_seconds = time.perf_counter() - t0
epochs = int(model.trainer.current_epoch)
pred, _ = model.predict(noisy, tile_size=(128, 128), tile_overlap=(48, 48))
pred = np.squeeze(np.asarray(pred[0] if isinstance(pred, (list, tuple)) else pred))
np.save(args.out, pred.astype(np.float32))
print(json.dumps({"train_seconds": train_seconds, "info": f"{epochs} epochs"}))
