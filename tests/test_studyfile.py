"""Study files: every shipped one loads and round-trips; each kind of mistake is named."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from search.errors import StudyFileError
from search.spec.space import Choice, FloatRange, IntRange
from search.spec.studyfile import known_studies, load_study, spec_from_dict
from tests.conftest import ROOT, TINY_MEMORIZE, write_study

SHIPPED = known_studies()


def test_the_seed_studies_ship() -> None:
    expected = {
        "imdb_generalize",
        "imdb_memorize",
        "overfit30_memorize",
        "noisy_sine_generalize",
        "square_generalize",
        "pima_generalize",
        "collinear_memorize",
        "collinear_shuffled_memorize",
    }
    assert expected <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_study_loads_and_round_trips(name: str) -> None:
    spec = load_study(name)
    assert spec.name == name
    assert spec.objective in ("generalize", "memorize")
    again = spec_from_dict(spec.to_dict(), name=name, path=spec.path)
    assert again == spec
    for baseline in spec.baselines:
        params = spec.baseline_trial_params(baseline)
        assert all(not isinstance(v, dict) for v in params.values())


def test_example_user_data_study_loads() -> None:
    spec = load_study(Path(__file__).parent.parent / "spaces" / "examples" / "my_data.toml")
    assert spec.data.source == "file"


def test_imdb_baselines_are_the_books_models() -> None:
    spec = load_study("imdb_generalize")
    widths = {b.name: (b.params["layers"], b.params["units"]) for b in spec.baselines}
    assert widths == {
        "original": (2, 16),
        "smaller": (2, 4),
        "bigger": (2, 512),
        "l2": (2, 16),
        "dropout": (2, 16),
    }
    l2 = next(b for b in spec.baselines if b.name == "l2")
    assert l2.params["l2"] == 0.001
    assert spec.baseline_trial_params(l2)["use_l2"] is True
    original = next(b for b in spec.baselines if b.name == "original")
    assert spec.baseline_trial_params(original)["use_l2"] is False


def test_space_kinds() -> None:
    spec = load_study("imdb_generalize")
    assert spec.space["units"] == IntRange(4, 512, log=True)
    assert spec.space["l2"] == FloatRange(1e-6, 1e-2, log=True, zero=True)
    assert isinstance(spec.space["batch_size"], Choice)


def test_unknown_study_lists_the_known_ones() -> None:
    with pytest.raises(StudyFileError) as info:
        load_study("no_such_study")
    message = str(info.value)
    assert "unknown study" in message
    assert "imdb_generalize" in message and "overfit30_memorize" in message


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    assert old in TINY_MEMORIZE, old
    return write_study(tmp_path, "broken", TINY_MEMORIZE.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "key", "pattern"),
    [
        (
            "layers = { low = 1, high = 2 }",
            "layers = { low = 3, high = 2 }",
            "space.layers",
            "reversed",
        ),
        (
            "dropout = { choices = [0.0, 0.1] }",
            "dropout = { low = 0.0, high = 1.2 }",
            "space.dropout",
            r"\[0, 1\)",
        ),
        (
            "units = { low = 4, high = 32, log = true }",
            "units = { low = 0, high = 32 }",
            "space.units",
            "width must be >= 1",
        ),
        ('name = "median"', 'name = "fancy"', "pruner.name", "unknown pruner"),
        ("epochs = 6", 'epochs = "six"', "training.epochs", "expected int"),
        ("epochs = 6", "epochs = 0", "training.epochs", "positive"),
        ('objective = "memorize"', 'objective = "win"', "objective", "generalize, memorize"),
        ('source = "overfit30"', 'source = "mnist"', "data.source", "unknown data source"),
        (
            "learning_rate = { low = 1e-3, high = 1e-2, log = true }",
            "learning_rate = { low = 0.0, high = 1e-2, log = true }",
            "space.learning_rate",
            "log scale needs low > 0",
        ),
        ("[training]", "[training]\nbatch = 3", "training.batch", "unknown key"),
        ("units = 8\n", "units = 64\n", "baselines[0].units", "outside the search space"),
        (
            "batch_size = { choices = [7, 21] }",
            'batch_size = { choices = [7, "all"] }',
            "space.batch_size",
            "every choice must be an integer",
        ),
    ],
)
def test_malformed_study_names_file_key_and_problem(
    tmp_path: Path, old: str, new: str, key: str, pattern: str
) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(StudyFileError) as info:
        load_study(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert re.search(pattern, message), message
    assert "\n" not in message


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    path = write_study(tmp_path, "bad", "objective = [unclosed\n")
    with pytest.raises(StudyFileError, match="not valid TOML"):
        load_study(path)


def test_zero_l2_maps_to_the_flag(tmp_path: Path) -> None:
    spec = load_study(write_study(tmp_path, "tiny", TINY_MEMORIZE))
    # Fixed values (activation, optimizer) are not Optuna parameters; l2 = 0 is use_l2 = False.
    assert spec.baseline_trial_params(spec.baselines[0]) == {
        "layers": 1,
        "units": 8,
        "use_l2": False,
        "dropout": 0.0,
        "batch_size": 21,
        "learning_rate": 0.005,
    }


def test_study_files_are_plain_toml() -> None:
    for name in SHIPPED:
        raw = tomllib.loads((Path(__file__).parent.parent / "spaces" / f"{name}.toml").read_text())
        assert "objective" in raw and "space" in raw and "data" in raw


@pytest.mark.parametrize("name", ["..", ".", "-x", " padded"])
def test_a_study_name_that_is_a_path_or_an_option_is_refused(tmp_path: Path, name: str) -> None:
    """A file ``...toml`` made a study ``..`` whose report went into ``storage/`` itself."""
    path = tmp_path / f"{name}.toml"
    path.write_text((ROOT / "spaces" / "overfit30_memorize.toml").read_text(), encoding="utf-8")
    with pytest.raises(StudyFileError, match="would be a path or an option; rename the file"):
        load_study(path)
