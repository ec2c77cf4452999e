"""In-process retries of transient operations with exponential backoff (the origin's policy).

`ETL_MAX_RETRIES` tries in all, the first wait `ETL_RETRY_DELAY` seconds, doubling, with jitter.
Only errors that `classify()` calls transient are retried; the classified error is what escapes.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

import backoff

from worker.classify import classify
from worker.errors import EtlError

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    max_tries: int = 3
    first_delay_s: float = 5.0
    max_delay_s: float = 120.0

    def call(self, what: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run `fn`, retrying transient failures; raise the classified EtlError at the end."""
        return self.wrap(what, fn)(*args, **kwargs)

    def wrap(
        self, what: str, fn: Callable[P, T], retry_if: Callable[[EtlError], bool] | None = None
    ) -> Callable[P, T]:
        """`fn` with retries of transient failures (and only those `retry_if` accepts, if given)."""

        def give_up(exc: Exception) -> bool:
            error = classify(exc)
            return not error.retryable or (retry_if is not None and not retry_if(error))

        def on_backoff(details: backoff.types.Details) -> None:
            log.warning(
                "retrying %s after %s (try %d, waiting %.1fs)",
                what, _describe(details.get("exception")), details["tries"], details.get("wait", 0.0),
            )

        retried = backoff.on_exception(
            functools.partial(backoff.expo, base=2, factor=max(self.first_delay_s, 0.001),
                              max_value=self.max_delay_s),
            Exception,
            max_tries=self.max_tries,
            giveup=give_up,
            on_backoff=on_backoff,
            jitter=backoff.full_jitter if self.first_delay_s > 0 else None,
            logger=None,
        )(fn)

        @functools.wraps(fn)
        def classified(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result: T = retried(*args, **kwargs)
                return result
            except EtlError:
                raise
            except Exception as exc:
                raise classify(exc) from exc

        return classified


def _describe(exc: object) -> str:
    return f"{type(exc).__name__}: {exc}" if exc is not None else "an error"
