"""The runtime: what runs jobs — the worker's turn loop, its handler slots, the
runner and batch runner, and one module per periodic duty (``duties/``)."""

from fairqueue.runtime.worker import EXIT_CRASHED, EXIT_OK, Worker

__all__ = ["EXIT_CRASHED", "EXIT_OK", "Worker"]
