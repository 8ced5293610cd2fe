"""KerasTuner's private hooks capsearch overrides, and its hyperparameter types, in one place.

Checked with KerasTuner 1.4.8 (``tests/test_compat.py`` run) and in the source of 1.4.0 (the
same methods, parameters and classes); the dependency bound ``keras-tuner>=1.4,<1.5`` keeps the
installed version in that series. What is used:

* ``HyperParameters._register(hyperparameter, overwrite=False)`` (:data:`REGISTER`): every
  declaration (``hp.Int``, ``hp.Float``, ``hp.Choice``, ``hp.Boolean``, ``hp.Fixed``, and
  ``merge``) goes through it; it appends the registered copy to ``hp.space`` and returns the
  value, or None when the declaration's conditions are inactive.
  :class:`DeclarationHookHyperParameters` overrides it and calls the public-named
  :meth:`~DeclarationHookHyperParameters.declared`.
* ``Tuner._try_build(hp)`` (:data:`TRY_BUILD`): builds the model of each trial, right after
  KerasTuner clears the Keras session; :class:`TunerHooks` runs ``before_build`` first.
* ``Tuner._configure_tensorboard_dir(callbacks, trial, execution=0)``
  (:data:`CONFIGURE_TENSORBOARD_DIR`): imports ``tensorboard`` on every trial under
  TensorFlow, which TensorFlow 2.21 no longer installs; it only matters to a ``TensorBoard``
  callback, so :class:`TunerHooks` skips it without one.
* ``keras_tuner.engine.hyperparameters``: the hyperparameter classes (:data:`Int`,
  :data:`Float`, :data:`Choice`, :data:`Boolean`, :data:`Fixed`), which the top-level package
  does not export.

A class overriding these hooks checks, when it is defined, that KerasTuner still has them
(:func:`check_hooks`): an override of a method that is gone would silently never run.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras_tuner
from keras_tuner.engine import hyperparameters as _hp_types

from search._compat import missing_private

__all__ = [
    "CHECKED_VERSIONS",
    "CONFIGURE_TENSORBOARD_DIR",
    "REGISTER",
    "TRY_BUILD",
    "Boolean",
    "Choice",
    "DeclarationHookHyperParameters",
    "Fixed",
    "Float",
    "HyperParameter",
    "Int",
    "TunerHooks",
    "check_hooks",
]

CHECKED_VERSIONS = "1.4.0 to 1.4.8"
"""The KerasTuner versions these hooks were checked with."""

REGISTER = "_register"
"""``HyperParameters`` method every declaration goes through: ``(hyperparameter, overwrite)``."""

TRY_BUILD = "_try_build"
"""``Tuner`` method that builds each trial's model: ``(hp)``."""

CONFIGURE_TENSORBOARD_DIR = "_configure_tensorboard_dir"
"""``Tuner`` method that points a ``TensorBoard`` callback at the trial: ``(callbacks, ...)``."""

HyperParameter = _hp_types.HyperParameter
Int = _hp_types.Int
Float = _hp_types.Float
Choice = _hp_types.Choice
Boolean = _hp_types.Boolean
Fixed = _hp_types.Fixed

# The parameters each hook is called with (self excluded), as checked.
_HOOK_PARAMETERS = {
    REGISTER: ("hyperparameter", "overwrite"),
    TRY_BUILD: ("hp",),
    CONFIGURE_TENSORBOARD_DIR: ("callbacks", "trial", "execution"),
}


def check_hooks(base: type, names: tuple[str, ...]) -> None:
    """Check that ``base`` (a KerasTuner class) still has the private methods ``names``.

    Args:
        base: ``keras_tuner.HyperParameters``, a tuner class, or a subclass of one.
        names: Some of :data:`REGISTER`, :data:`TRY_BUILD`, :data:`CONFIGURE_TENSORBOARD_DIR`.

    Raises:
        RuntimeError: A method is gone or takes other parameters; the message names the
            installed KerasTuner version.

    Example:
        >>> check_hooks(keras_tuner.Hyperband, (TRY_BUILD, CONFIGURE_TENSORBOARD_DIR))
    """
    for name in names:
        method = getattr(base, name, None)
        expected = _HOOK_PARAMETERS[name]
        found = () if method is None else tuple(inspect.signature(method).parameters)[1:]
        if found[: len(expected)] != expected:  # gone, or other parameters (self left out)
            described = f"{base.__name__}.{name}({', '.join(expected)})"
            raise missing_private(
                "keras-tuner", keras_tuner.__version__, described, CHECKED_VERSIONS
            )


def _first_base_outside(cls: type, hooks: type) -> type:
    """The first class in ``cls``'s MRO that is not ``hooks`` or one of its subclasses."""
    return next(k for k in cls.__mro__ if not issubclass(k, hooks))


class DeclarationHookHyperParameters(keras_tuner.HyperParameters):
    """``keras_tuner.HyperParameters`` that calls :meth:`declared` after each declaration.

    KerasTuner keeps its own bookkeeping (names, scopes, conditions, ``space``, ``values``);
    a subclass decides the value of each declaration in :meth:`declared`.

    Example:
        >>> class Doubled(DeclarationHookHyperParameters):
        ...     def declared(self, hp, value, *, first):
        ...         if value is not None and first:
        ...             self.values[hp.name] = 2 * value
        ...         return self.values.get(hp.name)
        >>> Doubled().Int("units", 4, 64, default=8)
        16
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_hooks(_first_base_outside(cls, DeclarationHookHyperParameters), (REGISTER,))

    def _register(self, hyperparameter: Any, overwrite: bool = False) -> Any:
        # Overrides REGISTER (see the module's docstring).
        first = overwrite or hyperparameter.name not in self.values
        value = super()._register(hyperparameter, overwrite)  # None when inactive
        return self.declared(self.space[-1], value, first=first)

    def declared(self, hp: Any, value: Any, *, first: bool) -> Any:
        """Called after KerasTuner registered a declaration; returns the declaration's value.

        Args:
            hp: The registered hyperparameter (KerasTuner's copy, the last of ``self.space``).
            value: The value KerasTuner gave it: the one already in ``self.values``, else its
                default; None when its conditions are inactive.
            first: Whether the value was not chosen before (a new name, or ``overwrite``).
        """
        return value


class TunerHooks:
    """Mixin for a KerasTuner tuner class (listed before it): public hooks around two private
    methods, checked when the subclass is defined.

    * :meth:`before_build` runs before each trial's model is built (:data:`TRY_BUILD`).
    * :data:`CONFIGURE_TENSORBOARD_DIR` runs only when a ``TensorBoard`` callback is there.

    Example:
        >>> class Quiet(TunerHooks, keras_tuner.RandomSearch):
        ...     def before_build(self):
        ...         pass
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_hooks(_first_base_outside(cls, TunerHooks), (TRY_BUILD, CONFIGURE_TENSORBOARD_DIR))

    def before_build(self) -> None:
        """Runs before each build, after KerasTuner cleared the Keras session."""

    def _try_build(self, hp: Any) -> Any:
        # Overrides TRY_BUILD (see the module's docstring).
        self.before_build()
        return super()._try_build(hp)  # type: ignore[misc]

    def _configure_tensorboard_dir(self, callbacks: list[Any], *args: Any) -> None:
        # Overrides CONFIGURE_TENSORBOARD_DIR: KerasTuner 1.4 imports tensorboard here on every
        # trial under TensorFlow, which TensorFlow 2.21 no longer installs.
        if any(type(c).__name__ == "TensorBoard" for c in callbacks):
            super()._configure_tensorboard_dir(callbacks, *args)  # type: ignore[misc]
