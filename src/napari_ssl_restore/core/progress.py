"""Progress events and cooperative cancellation.

A method's compute is a generator: it yields :class:`Step` events and returns its result. The same
generator is driven by :func:`drive` in the API, the CLI (with a tqdm bar) and the napari worker (with
a progress bar, previews and a Stop button), so all three behave alike.

Stopping is cooperative: when the caller asks to stop, :func:`drive` throws :class:`StopRequested`
into the generator at its current ``yield``. A closed-form method lets it propagate and the run ends
as :class:`Cancelled` (no result). An optimisation method may catch it and *return* its best estimate
so far, marking it as stopped in its provenance; when it has nothing worth keeping yet it raises
``StopRequested("why")`` again and the reason reaches the user.

Long loops report through a :class:`Ticker`: on their first iteration, then every ~0.5 s (or every
iteration when one takes longer), so progress moves and a Stop is seen within about a second.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import numpy as np


class StopRequested(Exception):
    """Thrown into a method's generator when the user asks it to stop.

    A method that has nothing worth keeping yet re-raises it with the reason as its message.
    """


class Cancelled(RuntimeError):
    """The run was stopped before it produced a result; nothing was written or added."""


NOTHING_KEPT = "Stopped before a result was ready; nothing was changed."


class Ticker:
    """When a loop should report: on the first call, then once ``interval`` seconds have passed.

    Reporting (a Step, a loss read back from the device, a Stop check) costs a little; reporting by
    time rather than every k iterations keeps the GUI responsive whatever an iteration costs.
    """

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            return True
        return False


@dataclasses.dataclass(frozen=True)
class Step:
    """One progress event.

    Attributes
    ----------
    step, total : int
        Work done so far and the total (``step == total`` on the last event).
    message : str
        Short human-readable status ("plane 3/10", "iter 400, loss 1.2e-3").
    preview : ndarray, dict of ndarray, or None
        Optional preview of the current estimate (float, ``(H, W, C)`` of the current plane); a dict
        names several (e.g. the two layers and the mask of Double-DIP). The GUI shows each in one
        preview layer, updated in place.
    metrics : mapping
        Numbers worth showing or logging (loss, PSNR proxy, early-stop state...).
    """

    step: int
    total: int
    message: str = ""
    preview: np.ndarray | Mapping[str, np.ndarray] | None = None
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return 0.0 if self.total <= 0 else min(1.0, self.step / self.total)


class StopToken:
    """A thread-safe flag that the GUI's Stop button sets and the worker reads."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    __call__ = is_set


MethodGenerator = Generator[Step, None, Any]


def steps_until_stop(gen: MethodGenerator, should_stop: Callable[[], bool] | None = None):
    """Re-yield a method's steps, throwing :class:`StopRequested` in once ``should_stop()`` is True.

    A generator returning the method's result. Raises :class:`Cancelled` (with the method's reason
    when it gave one) when the method ended on the Stop without a result.
    """
    try:
        step = next(gen)
        while True:
            yield step
            if should_stop is not None and should_stop():
                step = gen.throw(StopRequested())
            else:
                step = next(gen)
    except StopIteration as done:
        return done.value
    except StopRequested as stop:
        raise Cancelled(str(stop) or NOTHING_KEPT) from None


def drive(
    gen: MethodGenerator,
    progress: Callable[[Step], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Any:
    """Run a method generator to completion and return its result.

    Parameters
    ----------
    gen : generator
        Yields :class:`Step` events and returns the result.
    progress : callable, optional
        Called with every :class:`Step`.
    should_stop : callable, optional
        Polled after every step; when it returns True, :class:`StopRequested` is thrown into the
        generator, which either returns a partial result or lets the exception end the run.

    Raises
    ------
    Cancelled
        When a stop was requested and the method had no partial result to return.
    """
    steps = steps_until_stop(gen, should_stop)
    try:
        while True:
            step = next(steps)
            if progress is not None:
                progress(step)
    except StopIteration as done:
        return done.value


def unrestored(done: int, total: int, unit: str = "plane") -> str:
    """``"planes 3-5"``/``"plane 5"`` for the planes ``done + 1 .. total`` a Stop left as they were;
    empty when none were."""
    if done >= total:
        return ""
    if done + 1 == total:
        return f"{unit} {total}"
    return f"{unit}s {done + 1}-{total}"
