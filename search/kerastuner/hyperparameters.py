"""KerasTuner's ``hp`` API mirrored on Optuna: each declaration becomes an Optuna distribution."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import keras_tuner
import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from search._compat import keras_tuner as kt_compat
from search.errors import HypermodelError, one_line

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


@dataclass(frozen=True)
class Mirror:
    """How one KerasTuner hyperparameter is sampled on Optuna.

    ``mirrored``: a ``reverse_log`` range, where Optuna samples ``u`` and the value is
    ``low + high - u``.

    Example:
        >>> m = Mirror("units", IntDistribution(4, 64, log=True), mirrored=True)
        >>> m.value(4), m.value(64), m.param(60)
        (64, 4, 8)
    """

    name: str
    distribution: BaseDistribution
    mirrored: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        """Sample the value from ``trial`` (under the hyperparameter's own name)."""
        d = self.distribution
        if isinstance(d, IntDistribution):
            param: Any = trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        elif isinstance(d, FloatDistribution):
            param = trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)
        else:
            assert isinstance(d, CategoricalDistribution)
            param = trial.suggest_categorical(self.name, list(d.choices))
        return self.value(param)

    def value(self, param: Any) -> Any:
        """The hyperparameter value of an Optuna parameter value."""
        if not self.mirrored:
            return param
        d = self.distribution
        assert isinstance(d, (IntDistribution, FloatDistribution))
        if isinstance(d, IntDistribution):
            return d.low + d.high - int(param)
        return min(max(d.low + d.high - float(param), d.low), d.high)

    def param(self, value: Any) -> Any:
        """The Optuna parameter value that gives ``value`` (e.g. to enqueue a trial)."""
        return self.value(value)  # the mirror map is its own inverse

    def describe(self) -> str:
        """``Int[4, 64, step 4]``, ``Float[1e-05, 0.01, log]``, ``Choice[16, 32]``..."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return f"Choice{list(d.choices)}"
        assert isinstance(d, (IntDistribution, FloatDistribution))
        kind = "Int" if isinstance(d, IntDistribution) else "Float"
        extra = ", reverse_log" if self.mirrored else ", log" if d.log else ""
        step = f", step {d.step}" if d.step not in (None, 1) else ""
        return f"{kind}[{d.low}, {d.high}{step}{extra}]"


def mirror_of(hp: Any) -> Mirror | None:
    """The Optuna form of a registered KerasTuner hyperparameter; ``None`` for ``Fixed``.

    Raises:
        HypermodelError: A type or range Optuna cannot represent.

    Example:
        >>> mirror_of(kt_compat.Int("units", 4, 62, step=4)).distribution
        IntDistribution(high=60, log=False, low=4, step=4)
    """
    try:
        return _mirror(hp)
    except ValueError as exc:
        raise HypermodelError(f"hyperparameter {hp.name!r}: {one_line(exc)}") from None


def _mirror(hp: Any) -> Mirror | None:
    name = hp.name
    if isinstance(hp, kt_compat.Fixed):
        return None
    if isinstance(hp, kt_compat.Boolean):
        return Mirror(name, CategoricalDistribution([False, True]))
    if isinstance(hp, kt_compat.Choice):
        return Mirror(name, CategoricalDistribution(list(hp.values)))
    if not isinstance(hp, (kt_compat.Int, kt_compat.Float)):
        raise HypermodelError(
            f"hyperparameter {name!r}: {type(hp).__name__} has no Optuna form; use hp.Int, "
            "hp.Float, hp.Choice, hp.Boolean or hp.Fixed."
        )
    integer = isinstance(hp, kt_compat.Int)
    low, high, step, sampling = hp.min_value, hp.max_value, hp.step, hp.sampling
    if sampling not in ("linear", "log", "reverse_log"):
        raise HypermodelError(
            f"hyperparameter {name!r}: sampling {sampling!r} has no Optuna form; use linear, "
            "log or reverse_log."
        )
    if sampling == "linear":
        if integer:
            step = step or 1
            return Mirror(name, IntDistribution(low, low + (high - low) // step * step, step=step))
        if step is None:
            return Mirror(name, FloatDistribution(low, high))
        # Exact decimal steps: Optuna's own check is decimal; KerasTuner's float floor division
        # would drop the top of e.g. [0, 0.5] in steps of 0.1.
        count = (Decimal(str(high)) - Decimal(str(low))) // Decimal(str(step))
        top = float(Decimal(str(low)) + count * Decimal(str(step)))
        return Mirror(name, FloatDistribution(low, top, step=step))
    if step is not None:  # a multiplicative step: KerasTuner's finite grid, as a categorical
        return Mirror(name, CategoricalDistribution(_grid(low, high, step, sampling, integer)))
    distribution = (
        IntDistribution(low, high, log=True) if integer else FloatDistribution(low, high, log=True)
    )
    return Mirror(name, distribution, mirrored=sampling == "reverse_log")


def _grid(low: float, high: float, step: float, sampling: str, integer: bool) -> list[Any]:
    """KerasTuner's values of a log or reverse-log range with a multiplicative step."""
    count = int(math.log(high / low, step) + 1e-8) + 1
    values = [low * math.pow(step, i) for i in range(count)]
    if sampling == "reverse_log":
        values = [high + low - v for v in values]
    return [int(v) for v in values] if integer else values


class MirroringHyperParameters(kt_compat.DeclarationHookHyperParameters):
    """KerasTuner's own bookkeeping (names, scopes, conditions); new values from :meth:`_pick`.

    ``mirrors`` holds the Optuna form of every declaration seen, active or not.
    """

    def __init__(self) -> None:
        super().__init__()
        self.mirrors: dict[str, Mirror] = {}

    # KerasTuner checks every declaration when it is made; its errors become one-line errors
    # that name the hyperparameter.
    def Int(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 (KerasTuner's API)
        with _explained(name):
            return super().Int(name, *args, **kwargs)

    def Float(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Float(name, *args, **kwargs)

    def Choice(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Choice(name, *args, **kwargs)

    def Boolean(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Boolean(name, *args, **kwargs)

    def Fixed(self, name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        with _explained(name):
            return super().Fixed(name, *args, **kwargs)

    def declared(self, hp: Any, value: Any, *, first: bool) -> Any:
        """Record the declaration's Optuna form; pick the value of a new, active one."""
        name = hp.name
        mirror = mirror_of(hp)
        previous = self.mirrors.get(name)
        if mirror is not None and previous is not None and previous != mirror:
            raise HypermodelError(
                f"hyperparameter {name!r} is declared with two ranges ({previous.describe()} "
                f"and {mirror.describe()}); Optuna keeps one per name: rename one of them."
            )
        if mirror is not None:
            self.mirrors[name] = mirror
        if value is None or mirror is None or not first:
            return value  # inactive (KerasTuner returns None), fixed, or already chosen
        self.values[name] = self._pick(mirror, hp)
        return self.values[name]

    def _pick(self, mirror: Mirror, hp: Any) -> Any:
        raise NotImplementedError


class OptunaHyperParameters(MirroringHyperParameters):
    """A ``keras_tuner.HyperParameters`` whose values are sampled by an Optuna trial.

    Example:
        >>> def objective(trial):
        ...     hp = OptunaHyperParameters(trial)
        ...     model = MyHyperModel().build(hp)  # hp.Int(...) calls trial.suggest_int(...)
        ...     ...
    """

    def __init__(self, trial: optuna.Trial) -> None:
        super().__init__()
        self.trial = trial

    def _pick(self, mirror: Mirror, hp: Any) -> Any:
        with _explained(mirror.name):  # e.g. Optuna refusing a changed distribution
            return mirror.suggest(self.trial)


class ProbeHyperParameters(MirroringHyperParameters):
    """KerasTuner's defaults (as a plain ``HyperParameters()`` gives), collecting mirrors."""

    def _pick(self, mirror: Mirror, hp: Any) -> Any:
        return hp.default


class ReplayHyperParameters(MirroringHyperParameters):
    """A stored trial's values where the declarations still allow them (else the defaults),
    collecting mirrors: to walk the conditional paths the stored trials took.

    Example:
        >>> hp = ReplayHyperParameters({"layers": 3, "units_2": 999})
        >>> hp.Int("layers", 1, 3), hp.Choice("units_2", [16, 32])
        (3, 16)
        >>> sorted(hp.mirrors)
        ['layers', 'units_2']
    """

    def __init__(self, values: Mapping[str, Any]) -> None:
        super().__init__()
        self.replayed = dict(values)

    def _pick(self, mirror: Mirror, hp: Any) -> Any:
        value = self.replayed.get(mirror.name, hp.default)
        try:
            return value if _allows(mirror, mirror.param(value)) else hp.default
        except (TypeError, ValueError):  # e.g. a stored text for a range now
            return hp.default


def _allows(mirror: Mirror, param: Any) -> bool:
    d = mirror.distribution
    if isinstance(d, CategoricalDistribution):
        return any(type(c) is type(param) and c == param for c in d.choices)
    assert isinstance(d, (IntDistribution, FloatDistribution))
    return bool(d.low <= param <= d.high)


def fixed_hyperparameters(values: Mapping[str, Any]) -> keras_tuner.HyperParameters:
    """A plain KerasTuner ``HyperParameters`` holding ``values``, as KerasTuner's oracle hands it.

    Example:
        >>> hp = fixed_hyperparameters({"units": 32})
        >>> hp.Int("units", 4, 64)
        32
    """
    hp = keras_tuner.HyperParameters()
    hp.values = dict(values)
    return hp


def trial_hp_values(trial: FrozenTrial) -> dict[str, Any]:
    """The hyperparameter values a stored trial's model was built with (``hp_values``)."""
    values = trial.user_attrs.get("hp_values")
    if values is None:
        raise HypermodelError(
            f"trial {trial.number} has no hp_values: it did not run through a hypermodel."
        )
    return dict(values)


@contextlib.contextmanager
def _explained(name: str) -> Iterator[None]:
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise HypermodelError(f"hyperparameter {name!r}: {one_line(exc)}") from None
