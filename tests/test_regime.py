"""The verdict's regime rule on stored curves (no training: the rule reads stored attributes)."""

from __future__ import annotations

from typing import Any

import pytest
from optuna.trial import create_trial

from search.verdict.rules import regime


def _trial(train: list[float], val: list[float], *, running: bool = False) -> Any:
    best = min(range(len(val)), key=val.__getitem__)
    attrs: dict[str, Any] = {
        "train_curve": train,
        "val_curve": val,
        "best_epoch": best + 1,
        "epochs_run": len(val),
        "train_loss_best": min(train),
        "train_loss_final": train[-1],
        "val_loss_best": val[best],
        "val_loss_final": val[-1],
        "train_loss_kind": "running" if running else "inference",
    }
    return create_trial(value=val[best], user_attrs=attrs)


def test_training_falls_while_validation_rises_overfits() -> None:
    t = _trial([0.5, 0.3, 0.15, 0.08, 0.04], [0.40, 0.30, 0.31, 0.34, 0.38])
    out = regime(t, family_best_train=0.04, constant_train=0.69)
    assert out["regime"] == "overfits"
    assert out["gap_widening_share"] == pytest.approx(((0.38 - 0.04) - (0.30 - 0.3)) / 0.38)


def test_a_running_loss_above_validation_still_reads_as_overfitting() -> None:
    # Dropout inflates the running training loss above the validation loss: the gap itself is
    # negative at every epoch, but it widens as validation rises and training keeps falling.
    t = _trial([0.9, 0.8, 0.75, 0.72], [0.40, 0.30, 0.45, 0.55], running=True)
    out = regime(t, family_best_train=0.70, constant_train=0.95, exact_train=0.71)
    assert out["regime"] == "overfits"
    assert out["gap_widening_share"] == pytest.approx(((0.55 - 0.72) - (0.30 - 0.8)) / 0.55)


def test_training_and_validation_both_rising_is_unstable_not_fitting() -> None:
    # square_generalize's best: validation ends 17x its best and the training loss rose as well.
    t = _trial([9.0, 2.0, 1.5, 30.0, 40.0], [8.0, 2.5, 2.0, 20.0, 34.0])
    out = regime(t, family_best_train=1.5, constant_train=300.0)
    assert out["regime"] == "unstable"
    assert out["train_rise"] == pytest.approx((40.0 - 1.5) / 1.5)
    assert "learning rate" in out["why"]


def test_a_flat_end_fits() -> None:
    t = _trial([0.5, 0.3, 0.29, 0.29], [0.40, 0.32, 0.31, 0.315])
    out = regime(t, family_best_train=0.29, constant_train=0.69)
    assert out["regime"] == "fits"


def test_far_above_the_family_best_underfits() -> None:
    t = _trial([0.69, 0.62, 0.60], [0.70, 0.64, 0.63])
    out = regime(t, family_best_train=0.05, constant_train=0.69)
    assert out["regime"] == "underfits"
    assert out["underfit_share"] == pytest.approx((0.60 - 0.05) / (0.69 - 0.05))


def test_overfitting_is_read_before_a_high_training_loss_in_a_generalize_study() -> None:
    # The book's IMDB 2 x 16: its training loss stays above the family's best, but its validation
    # loss turns up while its training loss falls: it has the capacity, and overfits.
    t = _trial([0.5, 0.3, 0.2, 0.14, 0.10], [0.36, 0.30, 0.28, 0.29, 0.31])
    assert regime(t, family_best_train=0.015, constant_train=0.69)["regime"] == "overfits"


def test_a_memorize_study_reads_a_high_training_loss_first() -> None:
    # Seed 000's question: the held-out points' loss rises, but the question is the training set.
    t = _trial([0.08, 0.03, 0.02, 0.015], [0.05, 0.04, 0.06, 0.08])
    out = regime(t, family_best_train=1e-8, constant_train=0.09, memorize=True)
    assert out["regime"] == "underfits"
    assert regime(t, family_best_train=1e-8, constant_train=0.09)["regime"] == "overfits"


def test_a_memorizing_model_overfits_from_its_best_validation_epoch() -> None:
    # A memorize study's best epoch is its training loss's (the last here); "rises after its
    # best epoch" reads the validation curve's own best, epoch 2.
    t = _trial([0.5, 0.1, 0.01, 1e-4], [0.45, 0.40, 0.60, 0.99])
    assert t.user_attrs["best_epoch"] == 2  # _trial marks the validation best
    t.user_attrs["best_epoch"] = 4
    out = regime(t, family_best_train=1e-4, constant_train=0.69, memorize=True)
    assert out["regime"] == "overfits"
    assert "best epoch 2" in out["why"]
