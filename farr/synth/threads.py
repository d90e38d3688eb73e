"""One compute thread for work made of many small operations (sampling steps, one-person forward
passes, small logistic fits): on a busy machine, intra-op threads waiting for each other made
such work ~30x slower than one thread (measured on this project's 2 shared cores)."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from threadpoolctl import threadpool_limits


@contextmanager
def single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)
