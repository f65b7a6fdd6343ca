"""The engine's worker threads: `TaskPool` (threads kept across calls and layers, closed on
exit of `with`) and `run_tasks` (a call's image tasks, side by side, each on its share of
torch's intra-op threads)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from ..runtime import torch_threads


class TaskPool:
    """Worker threads kept across calls and shared by the layers of a run (`simulate` holds
    one, `with TaskPool() as pool:`, closed when the run ends). Fresh threads per call pay for
    their first torch operations again (VGG-8 lossy, 2 threads: 231 -> 207 ms per batch with
    kept threads); one pool for all layers keeps one allocator arena per worker (a pool per
    layer kept 16 and raised the peak RSS of the noisy case from 0.8 to 1.3 GiB). Idle
    workers are blocked and use no CPU."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._workers = 0

    def executor(self, workers: int) -> ThreadPoolExecutor | None:
        """The pool's executor of `workers` threads; None for one worker (no thread)."""
        if workers <= 1:
            return None
        if self._executor is None or self._workers != workers:
            self.close()
            self._executor = ThreadPoolExecutor(max_workers=workers,
                                                thread_name_prefix="sparsexbar-task")
            self._workers = workers
        return self._executor

    def close(self) -> None:
        """Let the workers exit (a later call starts new ones)."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor, self._workers = None, 0

    def __enter__(self) -> TaskPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_tasks(count: int, task: Callable[[int], None], workers: int, threads: int,
              pool: ThreadPoolExecutor | None = None) -> None:
    """Run task(0) ... task(count - 1), `workers` at a time on a thread pool (torch operations
    release the GIL), each worker's torch operations on threads // workers intra-op threads.

    `pool`: an executor of `workers` threads kept by the caller across calls (`TaskPool`);
    None: a pool for this call only. torch's intra-op thread count is process-wide:
    it is set for the workers and restored when all tasks are done. Gradient and inference
    modes are thread-local: the caller's are used.
    """
    if workers <= 1 or count <= 1:
        with torch_threads(threads):
            for i in range(count):  # tasks: a handful of image chunks
                task(i)
        return
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    inner = max(1, threads // workers)

    def run(i: int) -> None:
        torch.set_num_threads(inner)  # a worker thread's own count, for its task's operations
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            task(i)

    # The workers set their own counts; the caller's is restored when all tasks are done.
    with torch_threads(torch.get_num_threads()):
        if pool is not None:
            for future in [pool.submit(run, i) for i in range(count)]:
                future.result()  # re-raises a task's exception
            return
        with ThreadPoolExecutor(max_workers=workers) as executor:
            for future in [executor.submit(run, i) for i in range(count)]:
                future.result()
