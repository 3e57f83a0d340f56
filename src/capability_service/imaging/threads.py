"""One thread per call inside OpenCV and BLAS, for processes that already run one image step per core.

The job engine runs image steps on one pool thread per core (`CPU_WORKERS`). OpenCV's `parallel_for` and
OpenBLAS would each start a thread per core again inside every step, and their idle threads spin while
they wait for more work: on 2 cores that is CPU taken from the other image. Measured on the background
replacement steps of 8 ~1 MP photos on 2 pool threads (2 shared cores): 8.2-8.9 CPU s with one thread per
library call against 8.8-10.1 CPU s with the libraries' defaults, the mattes bit for bit the same.
ONNX Runtime's session is single-threaded for the same reason (`segment.default_threads`).
"""

from __future__ import annotations

import cv2
from threadpoolctl import threadpool_limits


def one_thread_per_call() -> None:
    """Limit OpenCV and the BLAS library numpy uses to one thread each, for the whole process."""
    cv2.setNumThreads(1)
    # Applied when made; kept (not used as a context manager) for the life of the process.
    threadpool_limits(limits=1, user_api="blas")
