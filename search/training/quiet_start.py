"""TensorFlow's native start-up lines, kept off the user's screen.

Importing TensorFlow and initialising its devices print lines from C++ before its logging is
set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them: "All log messages before
absl::InitializeLog() is called are written to STDERR", oneDNN's notice, "Could not find cuda
drivers", "failed call to cuInit" (each of the first three twice, once per native library).
:func:`native_startup_quieted` sends file descriptor 2 to a temporary file meanwhile and then
writes back every line that is not one of these, so a real error still shows.

It also keeps TensorFlow's "triggered tf.function retracing" warning off the screen: the service
traces one evaluation function per model by design (a trial, a seed repeat, a test score each
build a new model), which TensorFlow counts as retracing from the sixth model on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator

__all__ = [
    "STARTUP_CHATTER",
    "ExpectedRetracingFilter",
    "is_startup_chatter",
    "native_startup_quieted",
]

STARTUP_CHATTER = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called"
    r"|oneDNN custom operations are on"
    r"|Could not find cuda drivers"
    r"|failed call to cuInit"
    r"|Unable to register cu(?:DNN|FFT|BLAS) factory"
    r"|computation placer already registered"
    r"|TF-TRT Warning"
    r"|This TensorFlow binary is optimized to use available CPU instructions"
    r"|To enable the following instructions: .* rebuild TensorFlow"
)
"""TensorFlow's start-up lines that carry no news for a capsearch user."""


def is_startup_chatter(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up lines (:data:`STARTUP_CHATTER`).

    Example:
        >>> is_startup_chatter("I0000 00:00:17.1 1 port.cc:153] oneDNN custom operations are on.")
        True
        >>> is_startup_chatter("ValueError: bad input")
        False
    """
    return STARTUP_CHATTER.search(line) is not None


class ExpectedRetracingFilter(logging.Filter):
    """Drops TensorFlow's retracing warning, expected where each model traces its own functions.

    Example:
        >>> record = logging.makeLogRecord({"msg": "5 out of the last 5 calls to <f> triggered "
        ...     "tf.function retracing. Tracing is expensive"})
        >>> ExpectedRetracingFilter().filter(record)
        False
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


def _filter_expected_retracing() -> None:
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, ExpectedRetracingFilter) for f in logger.filters):
        logger.addFilter(ExpectedRetracingFilter())


@contextlib.contextmanager
def native_startup_quieted() -> Iterator[None]:
    """Hold back stderr (the file descriptor, C++ included) and drop TensorFlow's start-up lines.

    Everything else written meanwhile is written to stderr when the block ends, also when it
    raises. Where file descriptor 2 cannot be redirected (no real stderr), nothing is held.
    TensorFlow's expected retracing warning is filtered from here on (see the module's note).
    """
    _filter_expected_retracing()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            text = held.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines() if not is_startup_chatter(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()
