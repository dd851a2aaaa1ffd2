"""Work spread over worker processes: the files of a folder, the figures of a report of many runs."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

# More than 8 workers mostly wait on the disk (benchmarks/many_runs.py).
MAX_WORKERS = 8


def map_in_workers(
    work: Callable[[Any], Any],
    tasks: Sequence[Any],
    *,
    parallel_from: int,
    meanwhile: Callable[[], Any] | None = None,
) -> tuple[list[Any], Any]:
    """``[work(task) for task in tasks]`` in order, computed in worker processes (at most
    `MAX_WORKERS`, never more than there are cores) when there are at least ``parallel_from``
    tasks; and what ``meanwhile()`` gives (None without it), run in this process while they work."""
    workers = min(MAX_WORKERS, os.cpu_count() or 1, len(tasks))
    if len(tasks) < parallel_from or workers < 2:
        return [work(task) for task in tasks], meanwhile() if meanwhile else None
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = pool.map(work, tasks, chunksize=max(1, len(tasks) // (4 * workers)))
        here = meanwhile() if meanwhile else None
        return list(results), here
