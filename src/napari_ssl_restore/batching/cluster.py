"""The cluster: a local one (one worker per GPU, else CPU workers sharing the cores), its
dashboard link, and the clients of running schedulers (made once per address)."""
from __future__ import annotations

import logging
import os
from typing import Any


def _threads_plugin(threads: int, gpus: int):
    """A worker plugin setting torch's threads per worker (so workers share the cores instead of
    each taking all of them) and, with GPUs, one GPU per worker (LocalCluster names workers 0..n-1).
    """
    from distributed.diagnostics.plugin import WorkerPlugin

    class Threads(WorkerPlugin):
        name = "napari-ssl-restore-threads"

        def setup(self, worker) -> None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(threads)
            if gpus:
                index = int(worker.name) % gpus if str(worker.name).isdigit() else 0
                torch.cuda.set_device(index)

    return Threads()


def local_cluster(workers: int | None = None, device: str = "auto"):
    """A ``LocalCluster`` of worker processes: one per GPU when the device is a GPU, else
    ``workers`` (default: one per core, at most 8), each with an equal share of the cores for
    torch. Returns the client (its ``cluster`` closes with it)."""
    from distributed import Client, LocalCluster

    gpus = 0
    if device.startswith(("auto", "cuda")):
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cores = os.cpu_count() or 1
    if workers is None:  # many single-threaded workers beat one multi-threaded (docs/benchmarks)
        workers = gpus or min(cores, 8)
    if isinstance(workers, bool) or int(workers) < 1:
        raise ValueError(f"workers must be a positive integer; got {workers!r}.")
    workers = int(workers)
    threads = max(1, cores // workers)
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core",
                 "distributed.http.proxy", "distributed.worker"):
        logging.getLogger(name).setLevel(logging.WARNING)  # not every start/stop line on stderr
    try:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", silence_logs=logging.WARNING)
    except RuntimeError as exc:
        raise RuntimeError(
            f"the local dask cluster did not start ({exc}). Called from a script? Worker "
            "processes re-import it: put the call under `if __name__ == \"__main__\":`.") from exc
    client = Client(cluster)
    client.register_plugin(_threads_plugin(threads, gpus))
    return client


def dashboard_link(client) -> str:
    try:
        return client.dashboard_link or ""
    except Exception:  # noqa: BLE001 - no bokeh: no dashboard
        return ""


_CLIENTS: dict[str, Any] = {}


def _client(address: str):
    """A dask client for ``address``, made once per address."""
    from distributed import Client

    client = _CLIENTS.get(address)
    if client is None or client.status != "running":
        try:
            client = Client(address, timeout=10, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"cannot reach the dask scheduler at {address!r} ({exc}); check the "
                             "address, or clear the field to run here.") from None
        _CLIENTS[address] = client
    return client
