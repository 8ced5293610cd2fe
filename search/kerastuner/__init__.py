"""KerasTuner hypermodels on Optuna: a study's ``[hypermodel]`` replaces the Dense-stack space.

A study file may name a KerasTuner hypermodel instead of a ``[space]``::

    [hypermodel]
    module = "kt_hypermodel.py"     # relative to the study file, or "package.module"
    build = "PimaHyperModel"        # a build_model(hp) function or a keras_tuner.HyperModel class

Each Optuna trial hands the hypermodel an :class:`OptunaHyperParameters`: a real
``keras_tuner.HyperParameters`` (KerasTuner's own names, name scopes, conditions and checks) whose
values are sampled by Optuna instead of KerasTuner's oracle, so the hypermodel code is unchanged.
How each declaration becomes an Optuna distribution (:func:`mirror_of`):

* ``hp.Int`` / ``hp.Float``, linear: ``suggest_int`` / ``suggest_float`` on ``[min, max]`` with
  the same ``step`` (``max`` lowered to the last step, as KerasTuner's grid ends there);
* ``sampling="log"``: the same with ``log=True``;
* ``sampling="reverse_log"``: Optuna samples ``u`` log-uniformly on ``[min, max]`` and the value
  is ``min + max - u`` (KerasTuner's own formula: dense near ``max``); the trial's Optuna
  parameter is ``u``, the value the model got is in the trial's ``hp_values``;
* ``log``/``reverse_log`` with a (multiplicative) ``step``: a categorical over KerasTuner's grid;
* ``hp.Choice``: categorical over the values (KerasTuner's ``ordered`` is not modelled);
  ``hp.Boolean``: categorical ``[False, True]``; ``hp.Fixed``: not sampled, only recorded.

``hp.conditional_scope`` keeps KerasTuner's semantics: inside a scope whose condition is false,
a declaration is registered and returns ``None``, and Optuna samples nothing for it; TPE
(``group=True``) models the cases separately. A declaration KerasTuner rejects (a ``Choice``
mixing types, an unknown ``sampling``) or that Optuna cannot hold (one name declared with two
ranges) is a one-line :class:`~search.errors.HypermodelError` naming the hyperparameter.

Training: ``hypermodel.build(hp)`` then ``hypermodel.fit(hp, model, x, y, validation_data=...,
epochs=..., callbacks=[...])`` as KerasTuner calls it, so a ``fit`` override that searches the
batch size works. Our callbacks measure each epoch in inference mode
(:class:`~search.training.prepared.EpochEvaluator`, data loss without the L2 penalty), then prune;
Keras'
own ``val_loss`` (with the penalty) is kept as the trial's ``keras_val_curve``. The hypermodel
must compile its model, take the data's features as its one input (sparse multi-hot data:
``keras.Input(shape=(10000,), sparse=True)``) and end in the task's output (one sigmoid unit for
binary data, one linear unit for regression, a softmax over the classes).

A study without ``[hypermodel]`` has its ``[space]`` declared the same way by
:class:`SpaceHyperModel` (``capsearch kt`` on a plain study): each key's ``hp`` call, then the
model :func:`~search.training.model.build_model` builds for those parameters.
"""

from search.kerastuner.hyperparameters import (
    Mirror,
    OptunaHyperParameters,
    fixed_hyperparameters,
    mirror_of,
    trial_hp_values,
)
from search.kerastuner.loading import hypermodel_target, load_hypermodel
from search.kerastuner.probing import check_model, probe_space, probe_stored_paths
from search.kerastuner.space_hypermodel import SpaceHyperModel, declare_space, used_values
from search.kerastuner.training import train_hypermodel

__all__ = [
    "Mirror",
    "OptunaHyperParameters",
    "SpaceHyperModel",
    "check_model",
    "declare_space",
    "fixed_hyperparameters",
    "hypermodel_target",
    "load_hypermodel",
    "mirror_of",
    "probe_space",
    "probe_stored_paths",
    "train_hypermodel",
    "trial_hp_values",
    "used_values",
]
