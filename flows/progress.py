"""How far a night has got, for whoever shows it: the flows emit, a listener renders.

The flows call `night_started(total)` once the plan is known and `image_ended(...)` as each
image leaves the DAG. Without a listener (a deployment run on a worker) nothing is
subscribed and the flow prints its own `[n/N] id: state` line, which Prefect's log_prints
sends to the UI's log. The `gani` command subscribes a listener (`cli/console.py`: a
progress bar with rate and ETA on a terminal, plain `[n/N]` lines with the ETA otherwise)
and the flow then leaves the line to it.

Listeners run in the flow's thread; one that raises is dropped with a warning (a display
must never stop a night).
"""
from __future__ import annotations

import threading
from typing import Callable, Optional, Protocol


class Listener(Protocol):
    """What a progress display implements."""

    def night_started(self, total: int, skipped: int) -> None: ...

    def image_ended(self, image_id: str, state: str, reason: Optional[str],
                    label: str) -> None: ...


_listeners: list[Listener] = []
_lock = threading.Lock()


def subscribe(listener: Listener) -> Callable[[], None]:
    """Add `listener`; returns the function that removes it again."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)
    return unsubscribe


def _each(call: Callable[[Listener], None]) -> bool:
    """Call every listener; True when at least one took the event."""
    with _lock:
        current = list(_listeners)
    for listener in current:
        try:
            call(listener)
        except Exception as exc:  # noqa: BLE001 - a display must not stop the night
            print(f"warning: progress display failed ({type(exc).__name__}: {exc}); "
                  f"it is switched off")
            with _lock:
                if listener in _listeners:
                    _listeners.remove(listener)
    return bool(current)


def night_started(total: int, skipped: int = 0) -> bool:
    """The night will process `total` images (`skipped` already finished)."""
    return _each(lambda lst: lst.night_started(total, skipped))


def image_ended(image_id: str, state: str, reason: Optional[str] = None,
                label: str = "") -> bool:
    """One image reached its final state; False when nobody listens (print the line)."""
    return _each(lambda lst: lst.image_ended(image_id, state, reason, label))
