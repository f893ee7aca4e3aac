"""Time several ways of doing one thing side by side, in turns, on a busy machine.

On a shared machine the speed of the same work changes from minute to minute, so ways timed one
after another cannot be compared; :func:`time_in_turns` runs them in turns (a b c a b c ...), so
those changes fall on all of them alike, and only ratios measured in one run are compared.

Each turn first makes one untimed call (``primers``; e.g. a one-image request to the same
server): when several server processes share two cores, the process that answered last can
still hold a core (thread pools spin before they sleep), and the first request to a process
that has been idle pays for waking it up. The primer takes both costs out of the timed calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

__all__ = ["time_in_turns"]


def time_in_turns(
    calls: Mapping[str, Callable[[], object]],
    rounds: int,
    block: int = 1,
    warmup: int = 1,
    primers: Mapping[str, Callable[[], object]] | None = None,
) -> dict[str, list[float]]:
    """Run every call in turns and return how long each run took.

    In each round, for each name in ``calls`` in order: ``primers[name]()`` once, untimed (if
    given), then ``calls[name]()`` ``block`` times, each timed with ``time.perf_counter``.

    Args:
        calls: name -> a function doing the work once (e.g. posting one request); it should
            raise when the work fails, e.g. ``lambda: session.post(...).raise_for_status()``.
        rounds: rounds kept; each name gets ``rounds * block`` timings.
        block: timed calls per name per round.
        warmup: extra rounds run first and not kept (loading, caches, lazy set-up).
        primers: name -> an untimed call made before each block of that name.

    Returns:
        name -> list of ``rounds * block`` durations in milliseconds (float), in the order run.

    Raises:
        ValueError: ``rounds`` or ``block`` is below 1, or ``warmup`` is negative.
        Whatever a call raises: the timing stops there.
    """
    if rounds < 1 or block < 1 or warmup < 0:
        raise ValueError(
            f"expected rounds >= 1, block >= 1 and warmup >= 0, got {rounds}, {block}, {warmup}"
        )
    primers = primers or {}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(warmup + rounds):
        for name, call in calls.items():
            if name in primers:
                primers[name]()
            for _ in range(block):
                start = time.perf_counter()
                call()
                elapsed = (time.perf_counter() - start) * 1000
                if round_ >= warmup:
                    times[name].append(elapsed)
    return times
