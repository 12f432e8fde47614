"""The runtime: what runs jobs — the worker's turn loop, its handler slots, the
runner and batch runner, and one module per periodic duty (``duties/``)."""

from fairqueue.runtime.worker import Worker

__all__ = ["Worker"]
