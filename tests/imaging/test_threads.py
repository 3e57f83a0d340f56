"""The image pool's libraries run one thread per call."""

from __future__ import annotations

import cv2
from threadpoolctl import threadpool_info

from capability_service.jobs.cpu import CpuExecutor


def test_the_cpu_pool_makes_opencv_and_blas_single_threaded() -> None:
    cv2.setNumThreads(2)
    executor = CpuExecutor("thread", 2)
    try:
        assert cv2.getNumThreads() == 1
        blas = [library for library in threadpool_info() if library["user_api"] == "blas"]
        # numpy's own BLAS is loaded by now (the matte's least-squares fits use it).
        assert blas and all(library["num_threads"] == 1 for library in blas)
    finally:
        executor.shutdown()
