"""Handlers found by import path: how a worker in another process finds the code
a job names, and why some definitions cannot be found that way."""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any, Union

from fairqueue.errors import HandlerNotFound

__all__ = ["check_importable", "import_path", "is_async", "resolve"]


@functools.lru_cache(maxsize=4096)
def resolve(path: str) -> Any:
    """The object at import path ``module:qualname``; raises HandlerNotFound."""
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise HandlerNotFound(f"cannot import handler {path!r}: {e}") from e
    return obj


def import_path(obj: Union[type, Callable[..., Any]]) -> str:
    """``module:qualname`` of a class or function, refusing ones a worker could never import.

    Call :func:`check_importable` once the module has finished importing to make
    sure the path leads back to the object.
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise HandlerNotFound(
            f"{obj!r} is defined inside a function or is a lambda; workers find handlers by import path, "
            "so define it at module level"
        )
    if module == "__main__":
        raise HandlerNotFound(
            f"{qualname} is defined in the __main__ script, which a worker cannot import; move it into a module"
        )
    return f"{module}:{qualname}"


_importable: dict[str, Any] = {}


def check_importable(path: str, obj: Any) -> None:
    """Raises HandlerNotFound unless importing ``path`` gives back ``obj``."""
    if _importable.get(path) is obj:
        return
    if resolve(path) is not obj:
        raise HandlerNotFound(f"import path {path!r} does not lead back to {obj!r}; is the name rebound?")
    _importable[path] = obj


_ASYNC: dict[Any, bool] = {}


def is_async(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions and methods."""
    # Asked for every finalizer and batch phase run (a job's own handler: once per path, by the runner):
    # remembered per function (a method by its class's function).
    key = getattr(fn, "__func__", fn)
    answer = _ASYNC.get(key)
    if answer is None:
        answer = _ASYNC[key] = inspect.iscoroutinefunction(fn)
    return answer
