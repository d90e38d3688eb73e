"""Wall time and peak resident memory of this process and all its children, sampled."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import psutil


@contextmanager
def measured():
    """Yields a dict that holds `seconds` and `peak_gb` once the block ends."""
    result: dict[str, float] = {"peak_gb": 0.0}
    me = psutil.Process()
    done = threading.Event()

    def sample():
        while not done.is_set():
            rss = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            result["peak_gb"] = max(result["peak_gb"], rss / 1e9)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
        done.set()
        sampler.join()
