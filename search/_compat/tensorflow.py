"""TensorFlow's private state capsearch touches between trials, each behind one small function.

Checked with TensorFlow 2.21.0 and Keras 3.15.1 (``tests/test_compat.py`` run); the dependency
bounds ``tensorflow>=2.18,<2.22`` and ``keras>=3.6,<3.16`` stop at the next releases, which
were not checked. What is used:

* ``tensorflow.python.framework.ops._gradient_registry._registry``: the global dict from op
  type to gradient function, where every trace of a ``tf.custom_gradient`` function adds an
  entry named ``CustomGradient-<uid>`` (``custom_gradient.generate_name``) that is never
  removed (tensorflow/tensorflow#97697).
* ``tensorflow.python.eager.context.context().clear_kernel_cache``: the method
  ``keras.backend.clear_session()`` calls (a Keras internal) to empty the cache of
  instantiated graphs; shadowing it on the context instance keeps the cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping

import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.python.framework import ops

from search._compat import private_attr

__all__ = [
    "CHECKED_VERSIONS",
    "CUSTOM_GRADIENT_PREFIX",
    "gradient_registrations",
    "kernel_cache_kept",
]

CHECKED_VERSIONS = "2.21"
"""The TensorFlow versions these functions were checked with."""

CUSTOM_GRADIENT_PREFIX = "CustomGradient-"
"""The prefix ``tf.custom_gradient`` gives its registrations (``custom_gradient.generate_name``)."""


def gradient_registrations() -> MutableMapping[str, object]:
    """TensorFlow's global gradient registry: op type (or ``CustomGradient-N``) to its entry.

    Deleting an entry unregisters that gradient; only do it for graphs that are traced already.

    Raises:
        RuntimeError: The installed TensorFlow keeps its registry elsewhere.
    """
    registry = private_attr(
        ops, "_gradient_registry", "tensorflow", tf.__version__, CHECKED_VERSIONS
    )
    registrations = private_attr(
        registry, "_registry", "tensorflow", tf.__version__, CHECKED_VERSIONS
    )
    if not isinstance(registrations, MutableMapping):
        raise RuntimeError(
            f"tensorflow {tf.__version__}: the gradient registry is a "
            f"{type(registrations).__name__}, not a dict (checked with tensorflow "
            f"{CHECKED_VERSIONS}); install a checked version"
        )
    return registrations


@contextlib.contextmanager
def kernel_cache_kept() -> Iterator[None]:
    """Within the block, ``context().clear_kernel_cache()`` does nothing (Keras calls it).

    ``keras.backend.clear_session()`` empties TensorFlow's kernel cache by calling that method;
    an instance attribute of the same name shadows it until the block ends.

    Example:
        >>> with kernel_cache_kept():
        ...     context.context().clear_kernel_cache()  # what Keras calls: a no-op here
    """
    tf_context = context.context()
    private_attr(tf_context, "clear_kernel_cache", "tensorflow", tf.__version__, CHECKED_VERSIONS)
    tf_context.clear_kernel_cache = lambda: None
    try:
        yield
    finally:
        del tf_context.clear_kernel_cache
