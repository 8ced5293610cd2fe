"""The CAPSEARCH_* variables: one table, one rule, one-line errors, and the command line's flags."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest

import search
from search import settings
from search.cli import build_parser, capsearch_version
from search.data import DataOptions, data_context
from search.distributed import devices, liveness
from search.errors import FatalError, SettingsError, first_line, one_line
from search.storage import urls
from search.views import report_png, trial_plots
from tests.test_cli import assert_one_line_error, capsearch

PACKAGE = Path(search.__file__).resolve().parent

# (accessor, variable, default, a good value, what the accessor returns for it)
ACCESSORS: list[tuple[Callable[[], Any], str, Any, str, Any]] = [
    (settings.storage_url, "CAPSEARCH_STORAGE", None, " sqlite:///x.db ", "sqlite:///x.db"),
    (settings.data_dir, "CAPSEARCH_DATA", None, "/srv/data", Path("/srv/data")),
    (settings.cache_dir, "CAPSEARCH_CACHE", Path("storage/cache"), "/tmp/c", Path("/tmp/c")),
    (settings.offline, "CAPSEARCH_OFFLINE", False, "YES", True),
    (settings.spaces_dir, "CAPSEARCH_SPACES", PACKAGE.parent / "spaces", "/s", Path("/s")),
    (settings.artifacts_dir, "CAPSEARCH_ARTIFACTS", None, "/srv/plots", Path("/srv/plots")),
    (settings.png_renderer, "CAPSEARCH_PNG", "auto", "Matplotlib", "matplotlib"),
    (settings.heartbeat_interval, "CAPSEARCH_HEARTBEAT", None, "5", 5),
    (settings.grace_period, "CAPSEARCH_GRACE", None, "30", 30),
    (settings.max_retry, "CAPSEARCH_MAX_RETRY", None, "0", 0),
    (settings.intra_op_threads, "CAPSEARCH_INTRA_OP_THREADS", None, "4", 4),
    (settings.inter_op_threads, "CAPSEARCH_INTER_OP_THREADS", None, "0", 0),
    (settings.pg_synchronous_commit, "CAPSEARCH_PG_SYNCHRONOUS_COMMIT", "off", "ON", "on"),
]

# (accessor, variable, a bad value, words the message must hold: the rule and the fix)
BAD_VALUES: list[tuple[Callable[[], Any], str, str, tuple[str, ...]]] = [
    (settings.offline, "CAPSEARCH_OFFLINE", "maybe", ("one of 1, true, yes, 0", "set it to 1")),
    (settings.png_renderer, "CAPSEARCH_PNG", "gif", ("auto, kaleido, matplotlib", "set it to")),
    (settings.heartbeat_interval, "CAPSEARCH_HEARTBEAT", "abc", ("integer >= 1", "seconds")),
    (settings.heartbeat_interval, "CAPSEARCH_HEARTBEAT", "0", ("integer >= 1", "unset it")),
    (settings.grace_period, "CAPSEARCH_GRACE", "2.5", ("integer >= 1", "seconds")),
    (settings.max_retry, "CAPSEARCH_MAX_RETRY", "-1", ("integer >= 0", "re-queues")),
    (settings.intra_op_threads, "CAPSEARCH_INTRA_OP_THREADS", "many", ("integer >= 0", "threads")),
    (settings.inter_op_threads, "CAPSEARCH_INTER_OP_THREADS", "-2", ("integer >= 0", "ops")),
    (settings.pg_synchronous_commit, "CAPSEARCH_PG_SYNCHRONOUS_COMMIT", "local", ("on, off", "on")),
]


def _id(row: tuple[Any, ...]) -> str:
    return f"{row[1]}={row[3] if len(row) == 5 else row[2]}"


@pytest.mark.parametrize("row", ACCESSORS, ids=_id)
def test_each_accessor_has_a_default_and_reads_a_good_value(
    row: tuple[Callable[[], Any], str, Any, str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    accessor, name, default, good, expected = row
    monkeypatch.delenv(name, raising=False)
    assert accessor() == default
    monkeypatch.setenv(name, "   ")  # blank counts as unset
    assert accessor() == default
    monkeypatch.setenv(name, good)
    assert accessor() == expected
    assert settings.SETTINGS[name].default == default


@pytest.mark.parametrize("row", BAD_VALUES, ids=_id)
def test_a_bad_value_is_one_line_naming_variable_value_rule_and_fix(
    row: tuple[Callable[[], Any], str, str, tuple[str, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    accessor, name, bad, needles = row
    monkeypatch.setenv(name, bad)
    with pytest.raises(SettingsError) as caught:
        accessor()
    message = str(caught.value)
    assert isinstance(caught.value, FatalError)
    assert message.startswith(f"{name}={bad!r} is not allowed: expected ")
    assert "\n" not in message and message.endswith(".")
    assert "unset it" in message
    for needle in needles:
        assert needle in message, message
    assert (caught.value.name, caught.value.value) == (name, bad)


def test_the_message_has_the_documented_form() -> None:
    with pytest.raises(SettingsError) as caught:
        settings.HEARTBEAT.read({"CAPSEARCH_HEARTBEAT": "abc"})
    assert str(caught.value) == (
        "CAPSEARCH_HEARTBEAT='abc' is not allowed: expected an integer >= 1; "
        "set it to a whole number of seconds or unset it."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [(w, True) for w in ("1", "true", "TRUE", "Yes", " yes ")]
    + [(w, False) for w in ("0", "false", "False", "NO", "")],
)
def test_flags_accept_the_six_words_in_any_case(text: str, expected: bool) -> None:
    assert settings.OFFLINE.read({"CAPSEARCH_OFFLINE": text}) is expected


@pytest.mark.parametrize("text", ["2", "on", "off", "y", "enabled"])
def test_flags_refuse_any_other_word(text: str) -> None:
    with pytest.raises(SettingsError, match=r"CAPSEARCH_OFFLINE=.* is not allowed"):
        settings.OFFLINE.read({"CAPSEARCH_OFFLINE": text})


def test_the_table_covers_every_capsearch_variable_the_package_names() -> None:
    named: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        named.update(re.findall(r"\bCAPSEARCH_[A-Z_]*[A-Z]\b", path.read_text(encoding="utf-8")))
    assert named, "no CAPSEARCH_ variable found in the package"
    assert named == set(settings.SETTINGS), named ^ set(settings.SETTINGS)
    for setting in settings.SETTINGS.values():
        assert setting.doc.endswith(".") and "unset" in setting.doc, setting.name
        if setting.kind in ("flag", "int", "choice"):
            assert setting.fix.endswith("or unset it"), setting.name


def test_only_the_settings_module_reads_capsearch_variables() -> None:
    reads = re.compile(r"(os\.environ|getenv)[^\n]*(CAPSEARCH_|_ENV\b|_ENV_VAR\b)")
    offenders = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "settings.py"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if reads.search(line) and not line.lstrip().startswith((">>>", "#"))
    ]
    assert not offenders, offenders


def test_old_constant_names_are_the_table_names() -> None:
    assert urls.STORAGE_ENV_VAR == settings.STORAGE.name == "CAPSEARCH_STORAGE"
    assert liveness.HEARTBEAT_ENV == "CAPSEARCH_HEARTBEAT"
    assert liveness.GRACE_ENV == "CAPSEARCH_GRACE"
    assert liveness.MAX_RETRY_ENV == "CAPSEARCH_MAX_RETRY"
    assert devices.INTRA_OP_ENV == "CAPSEARCH_INTRA_OP_THREADS"
    assert devices.INTER_OP_ENV == "CAPSEARCH_INTER_OP_THREADS"
    assert trial_plots.ARTIFACTS_ENV == "CAPSEARCH_ARTIFACTS"
    assert report_png.PNG_ENV == "CAPSEARCH_PNG"
    assert urls.DEFAULT_STORAGE_DIR == settings.DEFAULT_STORAGE_DIR


# --------------------------------------------------------------------------------------------
# The callers read the settings
# --------------------------------------------------------------------------------------------


def test_data_context_reads_data_cache_and_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CAPSEARCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CAPSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CAPSEARCH_OFFLINE", "no")
    context = data_context(tmp_path)
    assert (context.data_dir, context.cache_dir) == (tmp_path / "data", tmp_path / "cache")
    assert context.offline is False
    flags = data_context(tmp_path, DataOptions(data_dir=tmp_path / "flag", offline=True))
    assert (flags.data_dir, flags.offline) == (tmp_path / "flag", True)
    monkeypatch.setenv("CAPSEARCH_OFFLINE", "maybe")
    with pytest.raises(SettingsError, match="CAPSEARCH_OFFLINE='maybe'"):
        data_context(tmp_path)


def test_liveness_and_threads_refuse_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSEARCH_MAX_RETRY", "x")
    with pytest.raises(SettingsError, match="CAPSEARCH_MAX_RETRY='x'"):
        liveness.liveness_settings(1, 3)
    monkeypatch.setenv("CAPSEARCH_INTRA_OP_THREADS", "-1")  # was ignored with a warning
    with pytest.raises(SettingsError, match="CAPSEARCH_INTRA_OP_THREADS='-1'"):
        devices.configure_tensorflow(_tf=object())


def test_png_renderer_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPSEARCH_PNG", "gif")
    with pytest.raises(SettingsError, match="CAPSEARCH_PNG='gif'"):
        report_png.write_pngs([], [])
    monkeypatch.setenv("CAPSEARCH_PNG", "MATPLOTLIB")
    assert report_png.write_pngs([], []) == "matplotlib"


def test_one_line_helpers() -> None:
    assert one_line(ValueError("a\n  b")) == "a b"
    assert one_line(ValueError("x" * 400)) == "x" * 297 + "..."
    assert first_line(ValueError("\n\n  first  \nsecond")) == "first"
    assert first_line(ValueError()) == ""


# --------------------------------------------------------------------------------------------
# Through the command line
# --------------------------------------------------------------------------------------------


@pytest.fixture
def kept(tmp_path: Path) -> str:
    """A storage holding one finished trial of a study named ``overfit30_memorize``."""
    url = f"sqlite:///{tmp_path / 'kept.db'}"
    study = optuna.create_study(study_name="overfit30_memorize", storage=url)
    study.add_trial(
        optuna.trial.create_trial(
            params={"units": 8},
            distributions={"units": optuna.distributions.IntDistribution(4, 32)},
            value=0.5,
        )
    )
    return url


def _trials(url: str) -> list[tuple[int, str]]:
    storage = optuna.storages.RDBStorage(url)
    try:
        summaries = optuna.get_all_study_summaries(storage)
        return [(s.n_trials, s.study_name) for s in summaries]
    finally:
        storage.engine.dispose()


@pytest.mark.parametrize(
    ("command", "name", "value"),
    [
        ("worker", "CAPSEARCH_HEARTBEAT", "abc"),
        ("run", "CAPSEARCH_OFFLINE", "maybe"),
        ("report", "CAPSEARCH_PNG", "gif"),
    ],
)
def test_a_bad_variable_is_one_line_on_stderr_and_exit_2(
    command: str, name: str, value: str, kept: str, tmp_path: Path
) -> None:
    before = _trials(kept)
    args = [command, "overfit30_memorize", "--storage", kept]
    if command == "report":
        args += ["--out", str(tmp_path / "report")]
    result = capsearch(*args, env={name: value})
    line = assert_one_line_error(result, f"{name}={value!r} is not allowed", "unset it")
    assert line.startswith("capsearch: error: ")
    assert _trials(kept) == before
    assert not (tmp_path / "report").exists()


def test_version_flag_prints_the_version() -> None:
    try:
        expected = importlib.metadata.version("capsearch")
    except importlib.metadata.PackageNotFoundError:
        expected = search.__version__
    result = capsearch("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"capsearch {expected}\n"


def test_version_falls_back_to_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert capsearch_version() == search.__version__


def test_shared_flags_come_from_parent_parsers() -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]

    def action(command: str, flag: str) -> Any:
        return commands[command]._option_string_actions.get(flag)

    for flag in ("--storage", "--data-dir", "--offline", "--trials", "--timeout"):
        assert action("run", flag) is action("worker", flag), flag  # one parent, shared
    for command in ("list", "show", "dashboard", "report", "export", "rerun", "workers"):
        assert action(command, "--storage") is action("run", "--storage"), command
    for command in ("export", "rerun", "workers", "kt"):
        assert action(command, "--data-dir") is action("run", "--data-dir"), command
    assert "Optuna study compared with" in action("kt", "--storage").help
    assert action("workers", "--timeout").help == "each worker stops starting trials after S s"
    assert action("kt", "--trials").help == "at most this many KerasTuner trials"
    assert action("copy", "--storage").help.startswith("source storage URL")
    assert action("validate", "--storage") is None
    args = parser.parse_args(
        ["run", "s", "--trials", "3", "--timeout", "1.5", "--storage", "u", "--offline"]
    )
    assert (args.trials, args.timeout, args.storage, args.offline) == (3, 1.5, "u", True)
