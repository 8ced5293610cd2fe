"""Resetting TensorFlow and Keras between trials so a worker's memory stays flat.

``keras.backend.clear_session()`` drops Keras' global state, but TensorFlow keeps one more
reference to every training graph traced with dense gradients: Keras' optimizer sums gradients
through ``ReplicaContext.all_reduce``, whose ``@tf.custom_gradient`` wrapper registers a
``CustomGradient-N`` gradient function in TensorFlow's global gradient registry at each trace,
and that function's closure holds the graph's tensors (tensorflow/tensorflow#97697,
keras-team/tf-keras#898). Two graphs per model, 6-8 MB per IMDB trial, never freed.

A registered gradient function is only looked up while a graph is being differentiated, that
is while it is traced; once a trial's graphs are built, their entries are dead weight.
:func:`clear_session` therefore removes them before Keras collects garbage.

``keras.backend.clear_session()`` also empties TensorFlow's kernel cache, which holds the
instantiated form of every compiled graph. The graphs :mod:`search.training.shared_graphs` keeps
for the
whole worker would then be instantiated again at each trial (0.25 s for a small IMDB model), so
:func:`clear_session` keeps that cache. Nothing accumulates in it: a trial's own graphs (those
``model.fit`` traces) leave it when they are garbage-collected (measured: resident memory flat
over 60 ``fit`` trials either way).

That collection walks every object Python tracks: TensorFlow and Keras alone hold about 350,000,
0.2 s per trial. :func:`long_lived_objects_frozen` takes what exists before the first trial
out of those walks, and, at every :func:`clear_session` inside it, what survived the collection:
the graphs :mod:`search.training.shared_graphs` traces for each new layer structure stay for the
whole
worker (in a real IMDB search they made the collection 90 ms per trial; frozen, 15 ms).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Mapping

import keras

from search._compat.tensorflow import (
    CUSTOM_GRADIENT_PREFIX,
    gradient_registrations,
    kernel_cache_kept,
)

# Set inside long_lived_objects_frozen: clear_session then freezes what survives its collection.
_freeze_survivors = False
_clears_since_full_collection = 0
FULL_COLLECTION_EVERY = 100
"""Inside :func:`long_lived_objects_frozen`, every this many :func:`clear_session` calls the
collection walks every object, frozen ones included (0.5 s in an IMDB worker), so that what
was frozen alive and died since in a reference cycle is freed."""


_release_requested = False


def request_release() -> None:
    """Make the next :func:`clear_session` free graphs dropped from a cache for good.

    A dropped graph stays in memory twice over: frozen objects in reference cycles wait for the
    next full walk, and TensorFlow's kernel cache keeps its instantiated form. The next
    :func:`clear_session` then walks everything and lets Keras empty the kernel cache (the
    graphs still kept are instantiated again at their next call).
    """
    global _release_requested
    _release_requested = True


def clear_session() -> None:
    """``keras.backend.clear_session()`` that also frees the graphs TensorFlow's registry keeps.

    Call it between trials, never while a model is being traced (another thread's trace would
    lose its custom gradients). Inside :func:`long_lived_objects_frozen`, what survives the
    collection is frozen too: call it before the next trial creates anything of its own.
    """
    global _clears_since_full_collection, _release_requested
    forget_custom_gradients()
    release, _release_requested = _release_requested, False
    if _freeze_survivors:
        _clears_since_full_collection += 1
        if _clears_since_full_collection >= FULL_COLLECTION_EVERY or release:
            _clears_since_full_collection = 0
            gc.unfreeze()  # this collection walks everything: what died frozen goes too
    if release:
        keras.backend.clear_session()  # the kernel cache too: dropped graphs leave it
    else:
        with kernel_cache_kept():
            keras.backend.clear_session()  # collects garbage: the freed graphs go now
    if _freeze_survivors:
        gc.freeze()


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keep the objects alive now out of the garbage collector's walks until the block ends.

    Enter it once the worker has imported TensorFlow and prepared its data, around the trial
    loop: a full collection (Keras' ``clear_session`` runs one per trial) then walks only what
    the trials created, about 10 ms instead of 0.2 s. Inside the block :func:`clear_session`
    freezes what survives its collection as well, so what one trial leaves for the next ones
    (shared graphs, caches) leaves the walks too; call it before a trial creates its own
    objects. What the trials create is collected as before. Frozen objects that die are freed
    by reference counting, or, if they sit in reference cycles, at the next full walk: every
    :data:`FULL_COLLECTION_EVERY` calls of :func:`clear_session` and after the block. The
    session is cleared first: the graphs of models trained before would otherwise be frozen.
    """
    global _freeze_survivors, _clears_since_full_collection
    clear_session()  # collects garbage too
    gc.freeze()
    _freeze_survivors, _clears_since_full_collection = True, 0
    try:
        yield
    finally:
        _freeze_survivors = False
        gc.unfreeze()


def forget_custom_gradients() -> int:
    """Drop every ``tf.custom_gradient`` registration made so far; returns how many."""
    registrations = gradient_registrations()
    names = _custom_gradient_names(registrations)
    for name in names:
        del registrations[name]
    return len(names)


def custom_gradient_count() -> int:
    """How many ``tf.custom_gradient`` registrations TensorFlow holds (tests watch it)."""
    return len(_custom_gradient_names(gradient_registrations()))


def _custom_gradient_names(registrations: Mapping[str, object]) -> list[str]:
    return [name for name in registrations if name.startswith(CUSTOM_GRADIENT_PREFIX)]
