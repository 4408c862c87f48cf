"""Step 7, record: every workflow run goes through :func:`recorded` -- the one record path.

It wraps :func:`portllm_edge.history.tracking` (a ``running`` row at the start; ``ok``,
``failed`` with the reason, or ``interrupted`` at the end) and adds the hardware probe.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from portllm_edge.history.store import RunTracker


def hardware_record() -> dict[str, Any]:
    """The hardware probe as a dict for run records; host facts only if the probe fails."""
    try:
        from portllm_edge.hardware.probe import probe

        return probe().to_dict()
    except Exception:  # a record must never fail the run it describes
        from portllm_edge.history import collect_host

        return collect_host()


@contextmanager
def recorded(kind: str, inputs: Mapping[str, Any] | Any) -> Iterator[RunTracker]:
    """Record the run of the block in the run history (see :func:`portllm_edge.history.tracking`).

    Args:
        kind: ``train``, ``port``, ``eval``, ``compare``, ``bench``, ``update``, ``fleet`` or ``forecast``.
        inputs: what the run was asked to do (a dataclass or a mapping).

    Yields:
        The tracker: its ``id`` names the run; set ``results`` before the block ends.
    """
    from portllm_edge.history import tracking

    with tracking(kind, inputs, hardware=hardware_record()) as run:
        yield run
