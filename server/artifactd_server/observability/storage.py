"""Backend operation latency and errors, for every storage adapter alike.

`meter_storage` wraps, on the adapter instance itself, every public verb of the storage
interfaces the adapter implements (`Storage`, `DirectTransfers`, `ResumableWrites`): the time
of each call is observed and an exception counted by its type. The instance stays what it was —
`isinstance(storage, DirectTransfers)` and identity checks keep working — which a separate proxy
object would break. Iterators returned (listings, reads) are timed while they are iterated;
uploads returned are timed at `commit` and `abort`, file readers in `chunks` (per upload or read,
not per write: no per-message cost).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from artifactd_server.observability.metrics import Metrics
from artifactd_server.storage.base import (
    DirectTransfers,
    FileReader,
    ResumableWrites,
    Storage,
    Upload,
)

log = logging.getLogger(__name__)


def _verbs(*interfaces: type) -> tuple[str, ...]:
    names = {
        name
        for interface in interfaces
        for name, value in vars(interface).items()
        if not name.startswith("_") and callable(value)
    }
    return tuple(sorted(names))


STORAGE_VERBS = _verbs(Storage, DirectTransfers, ResumableWrites)


class _Meter:
    """Times one adapter's verbs.

    Its costs are per call, and a directory upload makes several calls per file: the labelled
    histogram of each operation is looked up once (`labels` alone cost 12 µs a call), and the
    kind of each result type is found once (an ABC `isinstance` walks the type's registry).
    """

    def __init__(self, metrics: Metrics, backend: str) -> None:
        self._metrics = metrics
        self._backend = backend
        self._histograms: dict[str, Any] = {}
        self._kinds: dict[type, str] = {}

    def observe(self, operation: str, seconds: float, error: BaseException | None) -> None:
        histogram = self._histograms.get(operation)
        if histogram is None:
            histogram = self._metrics.storage_seconds.labels(self._backend, operation)
            self._histograms[operation] = histogram
        histogram.observe(seconds)
        if error is not None:
            name = type(error).__name__
            self._metrics.storage_errors.labels(self._backend, operation, name).inc()

    def timed(
        self, operation: str, function: Callable[..., Any], *, named: bool = True
    ) -> Callable[..., Any]:
        """`function`, timed; `named` copies its name and docstring onto the wrapper (for the
        adapter's verbs, wrapped once, not for each upload's, wrapped per file)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = function(*args, **kwargs)
            except Exception as exc:
                self.observe(operation, time.perf_counter() - start, exc)
                raise
            kind = self._kind(type(result))
            if kind == "iterator":
                return self._iterated(operation, result, time.perf_counter() - start)
            self.observe(operation, time.perf_counter() - start, None)
            if kind == "upload":
                self._wrap(result, "upload.", ("commit", "abort"), named=False)
            elif kind == "reader":
                self._wrap(result, "reader.", ("chunks",), named=False)
            return result

        return functools.wraps(function)(call) if named else call

    def _kind(self, result_type: type) -> str:
        kind = self._kinds.get(result_type)
        if kind is None:
            kind = (
                "iterator" if issubclass(result_type, Iterator)
                else "upload" if issubclass(result_type, Upload)
                else "reader" if issubclass(result_type, FileReader)
                else "other"
            )  # fmt: skip
            self._kinds[result_type] = kind
        return kind

    def _iterated(self, operation: str, items: Iterator[Any], spent: float) -> Iterator[Any]:
        error: BaseException | None = None
        try:
            while True:
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    spent += time.perf_counter() - start
                    return
                except Exception as exc:
                    spent += time.perf_counter() - start
                    error = exc
                    raise
                spent += time.perf_counter() - start
                yield item
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            self.observe(operation, spent, error)

    def _wrap(
        self, target: object, prefix: str, verbs: tuple[str, ...], *, named: bool = True
    ) -> object:
        for verb in verbs:
            function = getattr(target, verb, None)
            if callable(function):
                try:
                    setattr(target, verb, self.timed(prefix + verb, function, named=named))
                except (AttributeError, TypeError):  # __slots__ or a frozen object: not timed
                    log.debug("cannot time %s of %s", verb, type(target).__name__)
        return target


def meter_storage(storage: Storage, metrics: Metrics) -> Storage:
    """Times every public storage verb `storage` implements; returns `storage` itself."""
    backend = str(getattr(storage, "name", "") or type(storage).__name__)
    _Meter(metrics, backend)._wrap(storage, "", STORAGE_VERBS)
    return storage
