"""What a study was made with, stored on it, and the guard that compares it at every resume.

A study's *fingerprint* is its objective, its ``[data]`` table, its space (or hypermodel) and,
for its data, the shape, dtype and a hash of every split's arrays. It is stored on the study when
the study is created (the ``fingerprint`` attribute) and compared when the study is resumed, by
a study file (``capsearch run``, ``worker``, ``workers``) or from Python (:func:`search.search`):
resuming with other data, another space or another objective is a one-line
:class:`~search.errors.StudyMismatchError` that names the keys that differ, before any trial runs
and with nothing stored changed.

Where every difference only *narrows* the space (a range made narrower with the same scale and
step, a searched key fixed to a value it could take, ``zero`` dropped) or *adds choices* to a
choice list, ``allow_narrowed`` (the ``--allow-narrowed`` flag) lets the study resume with the
new space: the stored study file, spec and fingerprint are replaced and the change is appended to
the study's ``space_changes``. Optuna keeps one choice list per stored parameter, so added
choices are written onto the stored trials with the new fingerprint
(:func:`search._compat.optuna.widen_choices`, one transaction; values kept), which needs the
database itself and no trial running. A choice
list that loses or changes a choice is never allowed: stored trials took those values.

A hypermodel's space is its Python code, which the fingerprint names but cannot read: an edited
``build(hp)`` (or one redefined in a notebook) keeps its name. So the hyperparameters it declares
now (:func:`search.kerastuner.probe_space`, the default path) are also compared with the
distributions its stored trials were sampled from, by Optuna's own rule
(``optuna.distributions.check_distribution_compatibility``: a range may move, its scale and kind
may not, a choice list may not change); a difference is the same one-line error, and added
choices resume under the same flag.

Float arrays are hashed without the last 8 bits of their float32 mantissa, so a worker on
another host whose standardization differs in the last bits still matches.

Example:
    >>> old = {"space": {"units": {"low": 8, "high": 256, "log": True}}}
    >>> new = {"space": {"units": {"low": 16, "high": 64, "log": True}}}
    >>> [(d.key, d.narrowing) for d in differences(old, new)]
    [('space.units', True)]
    >>> old = {"space": {"batch_size": {"choices": [64, 512]}}}
    >>> new = {"space": {"batch_size": {"choices": [64, 128, 512]}}}
    >>> [(d.key, d.narrowing, d.adds_choices) for d in differences(old, new)]
    [('space.batch_size', False, True)]
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from search.errors import StudyMismatchError
from search.spec.family import width_key
from search.spec.space import Choice

if TYPE_CHECKING:
    import optuna
    from optuna.distributions import BaseDistribution

    from search.data import Dataset
    from search.spec.studyfile import StudySpec

__all__ = [
    "Difference",
    "check_resume",
    "data_fingerprint",
    "declared_differences",
    "differences",
    "distribution_form",
    "record_fingerprint",
    "study_fingerprint",
]

_SPLITS = ("train", "val", "test")


def _hash_array(digest: Any, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    if array.dtype.kind == "f":  # last mantissa bits dropped: other hosts' rounding matches
        array = (array.astype(np.float32).view(np.uint32) >> np.uint32(8)).astype(np.uint32)
    digest.update(np.ascontiguousarray(array).data.cast("B"))


def _describe(x: Any) -> dict[str, Any]:
    sparse = not isinstance(x, np.ndarray)
    return {"shape": [int(n) for n in x.shape], "dtype": str(x.dtype), "sparse": sparse}


def data_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """Shapes, dtypes and one SHA-256 hash of a data set's splits.

    Example:
        >>> import numpy as np
        >>> from search.data import Dataset
        >>> ds = Dataset("d", "regression", np.zeros((3, 2), np.float32), np.zeros((3, 1)))
        >>> fp = data_fingerprint(ds)
        >>> fp["x_train"], len(fp["sha256"])
        ({'shape': [3, 2], 'dtype': 'float32', 'sparse': False}, 64)
    """
    digest = hashlib.sha256()
    out: dict[str, Any] = {"task": dataset.task}
    for split in _SPLITS:
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        if x is None or y is None:
            continue
        out[f"x_{split}"], out[f"y_{split}"] = _describe(x), _describe(y)
        if isinstance(x, np.ndarray):
            _hash_array(digest, x)
        else:
            csr = x.tocsr()
            for part in (csr.data, csr.indices, csr.indptr, np.asarray(csr.shape)):
                _hash_array(digest, np.asarray(part))
        _hash_array(digest, np.asarray(y))
    out["sha256"] = digest.hexdigest()
    return out


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, as Optuna stores attributes."""
    return json.loads(json.dumps(value, default=str))


def _spec_part(spec_dict: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "objective": spec_dict.get("objective"),
        "data": spec_dict.get("data", {}),
        "multi_objective": bool(spec_dict.get("multi_objective")),
    }
    if "hypermodel" in spec_dict:
        out["hypermodel"] = spec_dict["hypermodel"]
    else:
        out["space"] = spec_dict.get("space", {})
    return out


def study_fingerprint(spec: StudySpec, dataset: Dataset | None) -> dict[str, Any]:
    """What the guard compares: objective, data table, space or hypermodel, and the arrays."""
    out = _spec_part(_plain(spec.to_dict()))
    if dataset is not None:
        out["arrays"] = data_fingerprint(dataset)
    return _plain(out)


def stored_fingerprint(study: optuna.Study) -> dict[str, Any] | None:
    """The fingerprint stored on a study; for older studies, the part its stored spec gives."""
    stored = study.user_attrs.get("fingerprint")
    if stored:
        return dict(stored)
    spec = study.user_attrs.get("spec")
    return _spec_part(dict(spec)) if spec else None


@dataclass(frozen=True)
class Difference:
    """One key whose stored and current values differ.

    ``narrowing``: the new value only narrows the space; ``adds_choices``: the new choice list
    holds every stored choice and more.
    """

    key: str
    old: Any
    new: Any
    narrowing: bool = False
    adds_choices: bool = False

    @property
    def allowed(self) -> bool:
        """Whether ``--allow-narrowed`` accepts it."""
        return self.narrowing or self.adds_choices

    def describe(self) -> str:
        """``space.units {...} -> {...}``; the arrays by shape and hash only."""
        if self.key == "arrays":
            return f"the data (shapes, dtypes or values: {_short(self.old)} -> {_short(self.new)})"
        return f"{self.key} {_text(self.old)} -> {_text(self.new)}"


def _short(arrays: Any) -> str:
    if not isinstance(arrays, dict):
        return "none"
    shape = arrays.get("x_train", {}).get("shape")
    return f"x_train {shape} sha256 {str(arrays.get('sha256', ''))[:10]}"


def _text(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, sort_keys=True)


def _narrows(old: Any, new: Any) -> bool:
    """Whether ``new`` only narrows the space parameter ``old`` (both in study-file form)."""
    if isinstance(old, dict) and "low" in old:
        if isinstance(new, (int, float)) and not isinstance(new, bool):  # fixed inside
            return bool(old["low"] <= new <= old["high"] or (old.get("zero") and new == 0))
        if not isinstance(new, dict) or "low" not in new:
            return False
        same = all(old.get(k) == new.get(k) for k in ("log", "step"))
        zero = not new.get("zero") or bool(old.get("zero"))
        return same and zero and old["low"] <= new["low"] and new["high"] <= old["high"]
    if isinstance(old, dict) and "choices" in old:
        return not isinstance(new, (dict, list)) and new in old["choices"]
    return False


def _adds_choices(old: Any, new: Any) -> bool:
    """Whether the choice list ``new`` holds every choice of ``old`` (same type) and more."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return False
    if set(old) != {"choices"} or set(new) != {"choices"}:
        return False
    before, after = list(old["choices"]), list(new["choices"])

    def kept(choice: Any) -> bool:
        return any(type(c) is type(choice) and c == choice for c in after)

    return len(after) > len(before) and all(kept(c) for c in before)


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[Difference]:
    """The keys whose values differ, space keys one by one; arrays only if both have them."""
    out: list[Difference] = []
    for key in ("objective", "multi_objective", "hypermodel"):
        if stored.get(key) != current.get(key):
            out.append(Difference(key, stored.get(key), current.get(key)))
    old_data, new_data = stored.get("data") or {}, current.get("data") or {}
    defaults = _option_defaults(str(new_data.get("source", "")))
    for key in sorted(set(old_data) | set(new_data)):
        # An option the stored study predates had its default then.
        old = old_data[key] if key in old_data else defaults.get(key, new_data.get(key))
        if old != new_data.get(key):
            out.append(Difference(f"data.{key}", old, new_data.get(key)))
    if "arrays" in stored and "arrays" in current and stored["arrays"] != current["arrays"]:
        out.append(Difference("arrays", stored["arrays"], current["arrays"]))
    old_space, new_space = stored.get("space") or {}, current.get("space") or {}
    for key in sorted(set(old_space) | set(new_space)):
        old, new = old_space.get(key), new_space.get(key)
        if old != new:
            narrowing = old is not None and new is not None and _narrows(old, new)
            added = not narrowing and _adds_choices(old, new)
            out.append(Difference(f"space.{key}", old, new, narrowing, added))
    return out


def _option_defaults(source: str) -> dict[str, Any]:
    from search.data import DATA_SOURCES, REQUIRED

    known = DATA_SOURCES.get(source)
    options = known.options if known is not None else ()
    return {o.name: _plain(o.default) for o in options if o.default is not REQUIRED}


def distribution_form(distribution: BaseDistribution) -> dict[str, Any]:
    """An Optuna distribution in the study-file form the messages print.

    Example:
        >>> from optuna.distributions import CategoricalDistribution, FloatDistribution
        >>> distribution_form(CategoricalDistribution([16, 32]))
        {'choices': [16, 32]}
        >>> distribution_form(FloatDistribution(1e-4, 1e-2, log=True))
        {'kind': 'float', 'low': 0.0001, 'high': 0.01, 'log': True}
    """
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return {"choices": list(distribution.choices)}
    kind = "int" if isinstance(distribution, IntDistribution) else "float"
    low, high, log, step = (getattr(distribution, k) for k in ("low", "high", "log", "step"))
    out: dict[str, Any] = {"kind": kind, "low": low, "high": high, "log": log}
    if step not in (None, 1):
        out["step"] = step
    return out


def declared_differences(
    study: optuna.Study, declared: Mapping[str, BaseDistribution]
) -> list[Difference]:
    """The stored trials' hyperparameters that the code now declares otherwise, or not at all.

    A name the stored trials sampled that the code no longer declares (on its default path or
    down any stored path), a range it widens and a distribution Optuna cannot resume (another
    type, log scale or choice list) are differences; a narrowed range is one
    ``--allow-narrowed`` accepts, as are added choices. A name declared now and never stored is
    not: a conditional branch the stored trials never took declares names of its own.

    Example:
        >>> import optuna
        >>> from optuna.distributions import CategoricalDistribution as C
        >>> from optuna.distributions import IntDistribution as I
        >>> study = optuna.create_study()
        >>> study.optimize(lambda t: t.suggest_int("units", 4, 32), n_trials=1)
        >>> declared_differences(study, {"units": I(4, 32), "new_one": C([1, 2])})
        []
        >>> [(d.key, d.narrowing) for d in declared_differences(study, {"units": I(8, 16)})]
        [('hypermodel.units', True)]
        >>> [(d.key, d.allowed) for d in declared_differences(study, {"units": I(4, 64)})]
        [('hypermodel.units', False)]
        >>> [(d.key, d.new) for d in declared_differences(study, {"width": I(4, 32)})]
        [('hypermodel.units', None)]
    """
    from optuna.distributions import check_distribution_compatibility

    stored: dict[str, BaseDistribution] = {}
    for trial in reversed(study.get_trials(deepcopy=False)):  # the latest: after any widening
        for name, distribution in trial.distributions.items():
            stored.setdefault(name, distribution)
    out: list[Difference] = []
    for name in sorted(stored):
        old = distribution_form(stored[name])
        if name not in declared:
            out.append(Difference(f"hypermodel.{name}", old, None))
            continue
        new = distribution_form(declared[name])
        if new == old:
            continue
        try:
            check_distribution_compatibility(stored[name], declared[name])
        except ValueError:
            out.append(Difference(f"hypermodel.{name}", old, new, False, _adds_choices(old, new)))
            continue
        out.append(Difference(f"hypermodel.{name}", old, new, _narrows(old, new)))
    return out


def record_fingerprint(study: optuna.Study, spec: StudySpec, dataset: Dataset | None) -> None:
    """Store the fingerprint on a study just created."""
    study.set_user_attr("fingerprint", study_fingerprint(spec, dataset))


def check_resume(
    study: optuna.Study,
    spec: StudySpec,
    dataset: Dataset | None,
    *,
    allow_narrowed: bool = False,
    study_file_text: str | None = None,
    declared: Mapping[str, BaseDistribution] | None = None,
) -> list[Difference]:
    """Compare a resumed study with what it was made with; raise on a difference.

    Args:
        study: The stored study, just loaded.
        spec: The study file (or the Python call's spec) now.
        dataset: The data now (``None``: the arrays are not compared).
        allow_narrowed: Resume anyway where every difference only narrows the space or adds
            choices; the study's stored file, spec and fingerprint then become the new ones
            (added choices are written onto the stored trials first).
        study_file_text: The new study file's text, stored when a narrowed space is accepted.
        declared: A hypermodel's hyperparameters as declared now (name to Optuna
            distribution), compared with its stored trials' (:func:`declared_differences`).

    Returns:
        The differences accepted (empty when nothing changed).

    Raises:
        StudyMismatchError: Something differs (and is not an allowed narrowing or added
            choice), or choices are to be added where the stored trials cannot take them (no
            database, or trials running).
    """
    stored = stored_fingerprint(study)
    current = study_fingerprint(spec, dataset)
    found = differences(stored, current) if stored is not None else []
    found += declared_differences(study, declared) if declared else []
    if not found:
        return []
    if allow_narrowed and all(d.allowed for d in found):
        changes = list(study.user_attrs.get("space_changes", []))
        changes.append({d.key: {"old": d.old, "new": d.new} for d in found})
        attrs: dict[str, Any] = {"spec": _plain(spec.to_dict())}
        if stored is not None:  # a study stored before fingerprints keeps having none
            attrs["fingerprint"] = current
        if study_file_text is not None:
            attrs["study_file_text"] = study_file_text
        attrs["space_changes"] = changes
        _store_new_space(study, spec, [d for d in found if d.adds_choices], attrs)
        return found
    listed = "; ".join(d.describe() for d in found)
    if all(d.allowed for d in found):
        way_out = (
            ", or pass --allow-narrowed (allow_narrowed=True from Python) to resume it with the "
            "edited space"
        )
    else:
        way_out = " (--allow-narrowed accepts only narrowed ranges, fixed values and added choices)"
    raise StudyMismatchError(
        f"study {spec.name!r} was stored with other settings: {listed}; nothing was run. "
        f"Start a new study under another name (rename the study file, or study_name= from "
        f"Python){way_out}."
    )


def _store_new_space(
    study: optuna.Study, spec: StudySpec, added: list[Difference], attrs: dict[str, Any]
) -> None:
    """Store the accepted space: the study's ``attrs`` and, for ``added`` choices, the longer
    lists on the stored trials, in one transaction where the study is in a database (a crash
    then leaves the old space or the new one, never trials of one with the fingerprint of the
    other)."""
    from search._compat import optuna as optuna_compat  # Optuna's schema: only when needed

    in_database = optuna_compat.rdb_storage(study) is not None
    if not in_database and not added:  # in memory or through a proxy: one call per attribute
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        return
    keys = ", ".join(d.key for d in added)
    if not in_database:
        raise StudyMismatchError(
            f"study {spec.name!r}: adding choices ({keys}) rewrites its stored trials, which "
            "needs the database itself; nothing was run. Run this once with --storage set to "
            "the database URL (sqlite:// or postgresql://, not a grpc:// proxy), then as before."
        )
    trials = study.get_trials(deepcopy=False) if added else []
    running = sum(t.state.name == "RUNNING" for t in trials)
    if running:
        raise StudyMismatchError(
            f"study {spec.name!r}: adding choices ({keys}) rewrites its stored trials, and "
            f"{running} trial(s) are running with the old lists; nothing was run. Stop its "
            "workers (a dead worker's trial is failed by the next heartbeat check), then run "
            "again."
        )
    widenings: list[optuna_compat.Widening] = []
    for difference in added:
        choices: Collection[Any] = difference.new["choices"]  # a list of choices (_adds_choices)
        if difference.key.startswith("hypermodel."):
            name = difference.key.removeprefix("hypermodel.")
            widenings.append((name.__eq__, choices))
            continue
        key = difference.key.removeprefix("space.")
        param = spec.space[key]
        assert isinstance(param, Choice)  # the new value has choices (_adds_choices)
        widenings.append((_param_names(key), param.choices))
    optuna_compat.widen_choices(study, widenings, user_attrs=attrs)


def _param_names(key: str) -> Callable[[str], bool]:
    """Which stored Optuna parameters a space key samples (``units``: also each layer's)."""

    def samples(name: str) -> bool:
        layer = name.rpartition("_")[2]
        return name == key or (key == "units" and layer.isdigit() and name == width_key(int(layer)))

    return samples
