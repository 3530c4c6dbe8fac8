"""Choosing the torch device: ``"auto"`` prefers CUDA, then Apple MPS, then the CPU."""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str = "auto"):
    """Return a ``torch.device`` for ``device``, falling back to the CPU when it is absent.

    ``"auto"`` picks CUDA, then MPS, then CPU. An explicitly requested accelerator that is not present
    (``"cuda"`` on a laptop, say) falls back to the CPU with a warning in the log rather than failing,
    so the same script runs on a workstation and on a cluster node. ``"cuda:1"`` picks a GPU by index.
    """
    import torch

    if not isinstance(device, str):
        if isinstance(device, torch.device):
            return device
        raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda'; got {device!r}.")
    name = device.strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(
            f"Unknown device {device!r}. Use one of {', '.join(DEVICE_CHOICES)} (or 'cuda:N')."
        )
    if kind == "auto":
        if torch.cuda.is_available():
            chosen = torch.device("cuda")
        elif _mps_available(torch):
            chosen = torch.device("mps")
        else:
            chosen = torch.device("cpu")
        logger.info("device='auto' -> %s", chosen)
        return chosen
    if kind == "cuda":
        if torch.cuda.is_available():
            chosen = torch.device(name)
            if chosen.index is not None and chosen.index >= torch.cuda.device_count():
                logger.warning("%s requested but only %d GPU(s) present; using cuda:0",
                               name, torch.cuda.device_count())
                chosen = torch.device("cuda:0")
            return chosen
        logger.warning("device=%r requested but CUDA is not available; falling back to the CPU", device)
        return torch.device("cpu")
    if kind == "mps":
        if _mps_available(torch):
            return torch.device("mps")
        logger.warning("device='mps' requested but MPS is not available; falling back to the CPU")
        return torch.device("cpu")
    return torch.device("cpu")


def check_device_name(device: str) -> str:
    """Validate a device name without importing torch (for argument checking)."""
    if not isinstance(device, str) or device.strip().lower().split(":", 1)[0] not in DEVICE_CHOICES:
        raise ValueError(
            f"Unknown device {device!r}. Use one of {', '.join(DEVICE_CHOICES)} (or 'cuda:N')."
        )
    return device.strip().lower()
