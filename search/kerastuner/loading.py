"""Loading a study's ``[hypermodel]``: a ``build_model(hp)`` function or a ``HyperModel`` class."""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from typing import TYPE_CHECKING, Any

import keras
import keras_tuner

from search.errors import HypermodelError, one_line

if TYPE_CHECKING:
    from search.spec.studyfile import StudySpec


def load_hypermodel(spec: StudySpec) -> keras_tuner.HyperModel:
    """Import the study's ``[hypermodel]`` and return it as a ``keras_tuner.HyperModel``.

    Raises:
        HypermodelError: The module cannot be imported, or ``build`` names nothing usable.
    """
    config = spec.hypermodel
    assert config is not None
    label = str(config.path or config.module)
    target = hypermodel_target(spec)
    if isinstance(target, type) and issubclass(target, keras_tuner.HyperModel):
        try:
            target = target()
        except Exception as exc:
            raise HypermodelError(
                f"{label}: {config.build}() failed: {type(exc).__name__}: {one_line(exc)}"
            ) from None
    if isinstance(target, keras_tuner.HyperModel):
        return target
    if callable(target) and not isinstance(target, type):
        return _BuildFunction(target)
    found = "nothing" if target is None else type(target).__name__
    raise HypermodelError(
        f"{label}: {config.build!r} is {found}; name a build_model(hp) function or a "
        "keras_tuner.HyperModel subclass in hypermodel.build."
    )


def hypermodel_target(spec: StudySpec) -> Any:
    """What the study's ``hypermodel.build`` names in its module (``None`` when nothing).

    Raises:
        HypermodelError: The study has no ``[hypermodel]``, or the module cannot be imported.
    """
    config = spec.hypermodel
    if config is None:
        raise HypermodelError(f"study {spec.name} has no [hypermodel] section.")
    try:
        module = _import(config.module, config.path)
    except Exception as exc:
        label = str(config.path or config.module)
        raise HypermodelError(
            f"cannot import hypermodel {label}: {type(exc).__name__}: {one_line(exc)}"
        ) from None
    return getattr(module, config.build, None)


class _BuildFunction(keras_tuner.HyperModel):
    """A ``build_model(hp)`` function as a HyperModel (plain ``model.fit``)."""

    def __init__(self, build: Any) -> None:
        super().__init__(name=getattr(build, "__name__", None))
        self._function = build

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        return self._function(hp)


def _import(module: str, path: Any) -> Any:
    if path is None:
        return importlib.import_module(module)
    name = "capsearch_hypermodel_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded  # dataclasses and pickling look modules up by name
    spec.loader.exec_module(loaded)
    return loaded
