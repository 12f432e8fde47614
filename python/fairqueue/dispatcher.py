"""The dispatcher core as the public API offers it (``fairqueue.Dispatcher``): the
Rust class, with every argument error raised as
:class:`~fairqueue.errors.InvalidArgument` naming the method.

The binding converts values itself where it can name them; what it cannot —
a str where a number belongs, a str with a lone surrogate — surfaces from PyO3
as a TypeError or UnicodeEncodeError, which this subclass turns into the
package's error. The worker and test mode use the core class directly.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from fairqueue import _core
from fairqueue.errors import InvalidArgument

__all__ = ["Dispatcher"]

F = TypeVar("F", bound=Callable[..., Any])

_FAULTS = (TypeError, OverflowError, UnicodeEncodeError)


def _checked(name: str, method: F) -> F:
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except _FAULTS as e:
            raise InvalidArgument(f"Dispatcher.{name}: {e}") from None

    return call  # type: ignore[return-value]


class Dispatcher(_core.Dispatcher):
    __doc__ = _core.Dispatcher.__doc__
    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> Dispatcher:
        try:
            return super().__new__(cls, *args, **kwargs)
        except _FAULTS as e:
            raise InvalidArgument(f"Dispatcher: {e}") from None


for _name, _method in list(vars(_core.Dispatcher).items()):
    if callable(_method) and not _name.startswith("_"):
        setattr(Dispatcher, _name, _checked(_name, _method))
