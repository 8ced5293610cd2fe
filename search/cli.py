"""Command line: ``capsearch run STUDY``, ``list``, ``show STUDY``, ``delete STUDY``, ``validate``,
``worker STUDY``, ``workers STUDY -n N``, ``copy STUDY``, ``verdict STUDY``, ``report STUDY``,
``dashboard``, ``proxy``, ``kt STUDY``, ``export STUDY`` and ``rerun STUDY TRIAL`` (also
``python -m search``).

Each command is a few lines over the library; :func:`main` is the one place that turns the
project's errors into a one-line message and exit code 2 (no traceback, nothing stored changed).
Each command imports what it uses when it runs, so ``--help`` and a bad flag answer at once,
without loading Optuna, the storage drivers or TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from search.errors import FatalError, SearchError, UsageError

if TYPE_CHECKING:
    from search.runs import SearchOptions
    from search.spec.studyfile import StudySpec

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C; a stop signal gives 128 + its number (SIGTERM: 143)


def _quiet_libraries() -> None:
    # TensorFlow's C++ start-up chatter and Optuna's per-trial INFO lines would bury our own.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    from search.runs import run_search
    from search.spec import load_study

    spec = load_study(args.study)
    options = _search_options(args)
    _quiet_libraries()
    run_search(spec, options, echo=_echo)
    if not args.no_verdict:
        _verdict_hook(spec, options, workers=1)
    return 0


def _verdict_hook(spec: Any, options: SearchOptions, *, workers: int) -> None:
    """A study file with a ``[verdict]`` table gets its verdict at the end of a search."""
    if spec.verdict is None:
        return
    from search.verdict import give_verdict
    from search.views.verdict_view import verdict_lines

    for line in verdict_lines(give_verdict(spec, options, workers=workers, echo=_echo)):
        _echo(line)


def cmd_verdict(args: argparse.Namespace) -> int:
    import json

    from search.verdict import give_verdict, run_verdict_worker
    from search.views.verdict_view import verdict_lines

    spec = _stored_study_spec(args)
    options = _search_options(args)
    _quiet_libraries()
    if args.worker_only:
        run_verdict_worker(spec, options, args.worker_id or "w0", echo=_echo)
        return 0
    echo = _quiet_echo if args.json else _echo
    verdict = give_verdict(spec, options, workers=args.n, train=not args.no_train, echo=echo)
    if args.json:
        print(json.dumps(verdict, indent=2, allow_nan=False), flush=True)
    else:
        for line in verdict_lines(verdict):
            _echo(line)
    return 0


def _quiet_echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_list(args: argparse.Namespace) -> int:
    from search.views.show import list_records, list_rows

    if args.json:
        _echo_json(list_records(args.storage))
        return 0
    for line in list_rows(args.storage):
        _echo(line)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from search.views.show import show_record, show_study

    if args.json:
        _echo_json(show_record(args.study, args.storage, top=args.top))
        return 0
    for line in show_study(args.study, args.storage, top=args.top):
        _echo(line)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from search.storage.studies import load_stored_study
    from search.storage.urls import mask_url
    from search.views.transfer import delete_with_artifacts

    stored = load_stored_study(args.study, args.storage)  # a missing study: exit 2, no prompt
    count = len(stored.study.get_trials(deepcopy=False))
    where = mask_url(stored.url)
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"delete asks first and stdin is not a terminal; pass --yes to delete study "
                f"{args.study}"
            )
        answer = input(f"delete study {args.study} with its {count} trials from {where}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            _echo("nothing deleted")
            return EXIT_FAILED
    deleted, plots = delete_with_artifacts(args.study, stored.url)
    kept = "plots kept (their folder is shared)" if plots is None else f"{plots} plots"
    _echo(f"deleted study {args.study}: {deleted} trials, {kept}, from {where}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from search.views.dashboard import serve_dashboard

    serve_dashboard(args.storage, host=args.host, port=args.port)
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    from search.distributed.liveness import liveness_settings
    from search.distributed.proxy_server import serve_proxy
    from search.storage.urls import resolve_storage_url

    _quiet_libraries()
    url = resolve_storage_url(args.storage)
    return serve_proxy(
        url,
        host=args.host,
        port=args.port,
        liveness=liveness_settings(),
        echo=_echo,
        cpu=args.cpu,
    )


def cmd_report(args: argparse.Namespace) -> int:
    from search.views.report import write_report

    _quiet_libraries()
    result = write_report(args.study, args.storage, args.out)
    _echo(f"report of {result.study}: {result.html}")
    _echo(f"{len(result.pngs)} PNG files ({result.renderer}) in {result.folder}/")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from search.spec.studyfile import known_studies, load_study
    from search.views.summary import plural

    names = args.studies or known_studies()
    for name in names:
        spec = load_study(name)
        baselines = plural(len(spec.baselines), "baseline")
        data = f"data {spec.data.source}"
        if args.data:
            from search.data import data_context, load_dataset

            context = data_context(spec.path.parent)
            dataset = load_dataset(spec.data.source, spec.data.options, context)
            data += f" loaded: {dataset.description}"
        else:
            data += ", not loaded: --data reads it"
        _echo(f"{spec.name}: ok ({spec.objective}, {data}, {baselines})")
        if spec.hypermodel is not None:
            _echo(
                "  note: its [hypermodel] is Python code that `run` imports and executes; "
                "validate did not import it (trust the file as you would a script)"
            )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from search.distributed.stop_signals import StopSignals
    from search.engine.trial_loop import default_worker_id, seed_offset_for
    from search.errors import WorkerStopped
    from search.runs import WorkerOptions, run_search
    from search.spec import load_study

    signals = StopSignals()
    with signals.installed():  # from the start: a stop while loading ends the worker cleanly
        spec = load_study(args.study)
        worker = args.worker_id or default_worker_id()
        # Library warnings and log records carry the worker id too.
        logging.basicConfig(format=f"[{worker}] %(levelname)s %(name)s: %(message)s")
        logging.captureWarnings(True)
        options = _search_options(
            args, evaluate_test=not args.no_summary, summary=not args.no_summary
        )
        worker_options = WorkerOptions(
            worker_id=worker,
            seed_offset=seed_offset_for(worker),
            signals=signals,
            configure_tensorflow=True,  # before any model is built, once the storage is good
        )
        _quiet_libraries()
        import optuna

        optuna.logging.disable_default_handler()  # Optuna's records get the worker id too
        optuna.logging.enable_propagation()
        try:
            run_search(spec, options, echo=_echo, worker=worker_options)
        except WorkerStopped as exc:
            _echo(f"[{worker}] stopped by {exc.signal_name}; run a worker again to resume")
    return 0


def cmd_workers(args: argparse.Namespace) -> int:
    from search.runs import run_workers
    from search.spec import load_study

    spec = load_study(args.study)
    options = _search_options(args)
    _quiet_libraries()
    code = run_workers(spec, args.n, options, echo=_echo)
    if code == 0 and not args.no_verdict:
        _verdict_hook(spec, options, workers=args.n)
    return code


def cmd_copy(args: argparse.Namespace) -> int:
    from search.storage.urls import mask_url, resolve_storage_url
    from search.views.transfer import copy_with_artifacts

    if args.from_url is not None:
        if args.storage is not None:
            raise UsageError("copy: give the source as --storage only (--from is its old name)")
        print("capsearch: warning: copy --from is deprecated; use --storage", file=sys.stderr)
    source = resolve_storage_url(args.storage or args.from_url)
    _quiet_libraries()  # no "A new study created in RDB" from Optuna's copy
    result = copy_with_artifacts(args.study, source, args.to_url)
    missing = f" ({result.missing} missing in the source)" if result.missing else ""
    if result.shared:
        missing = " (in the artifact folder both storages share)"
    _echo(
        f"copied study {args.study}: {result.trials} trials and {result.artifacts} plots"
        f"{missing} from {mask_url(source)} to {mask_url(args.to_url)}"
    )
    return 0


def cmd_kt(args: argparse.Namespace) -> int:
    from search.compare.keras_tuner import compare_with_keras_tuner
    from search.spec.studyfile import load_study

    spec = load_study(args.study)
    options = _search_options(args)
    _quiet_libraries()
    compare_with_keras_tuner(
        spec,
        options,
        tuner=args.tuner,
        max_epochs=args.max_epochs,
        resume=args.resume,
        echo=_echo,
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from search.replay.export import export_stored

    spec = _stored_study_spec(args)
    options = _search_options(args)
    _quiet_libraries()
    result = export_stored(
        spec, options, trial_number=args.trial, out_dir=args.out, code=args.code, echo=_echo
    )
    return 0 if result.ok else EXIT_FAILED


def cmd_rerun(args: argparse.Namespace) -> int:
    from search.replay.rerun import DEFAULT_RTOL, rerun_stored

    spec = _stored_study_spec(args)
    options = _search_options(args)
    _quiet_libraries()
    tolerance = args.tolerance if args.tolerance is not None else DEFAULT_RTOL
    result = rerun_stored(spec, options, args.trial, rel_tol=tolerance, echo=_echo)
    return 0 if result.reproduced else EXIT_FAILED


def _stored_study_spec(args: argparse.Namespace) -> StudySpec:
    """The study file of a command on a stored study: by name or path, as ``run`` takes it, or
    else the file a stored study of that name was run from (a Python search writes its own)."""
    from search.errors import StudyFileError
    from search.spec.studyfile import load_study

    try:
        return load_study(args.study)
    except StudyFileError:  # not a shipped study nor a file: a stored study's own, perhaps
        if str(args.study).endswith(".toml"):
            raise
        recorded = _recorded_study_file(args.study, args.storage)
        if recorded is None:
            raise
        path = Path(recorded)
        if path.suffix != ".toml" or not path.is_file():
            raise StudyFileError(
                str(args.study),
                "",
                f"the stored study's file {recorded} is not there any more; pass the path of "
                "its study file instead of the name",
            ) from None
        return load_study(path)


def _recorded_study_file(name: str, storage: str | None) -> str | None:
    from search.storage.studies import load_stored_study

    try:
        recorded = load_stored_study(name, storage).study.user_attrs.get("study_file")
    except FatalError:  # no such study, or no storage: the study-file error says more
        return None
    return str(recorded) if recorded else None


def _search_options(args: argparse.Namespace, **extra: Any) -> SearchOptions:
    """The run settings commands share, from their flags (flags a command lacks stay unset)."""
    from search.runs import SearchOptions

    return SearchOptions(
        trials=getattr(args, "trials", None),
        timeout=getattr(args, "timeout", None),
        storage=args.storage,
        data_dir=args.data_dir,
        offline=args.offline,
        allow_narrowed=getattr(args, "allow_narrowed", False),
        **extra,
    )


def _echo(line: str) -> None:
    print(line, flush=True)


def _echo_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2, default=str), flush=True)


def _number(kind: type, *, minimum: float, strict: bool, what: str) -> Callable[[str], Any]:
    """An argparse type: ``kind`` at least ``minimum`` (above it when ``strict``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _number(int, minimum=1, strict=False, what="a positive integer")
_non_negative_int = _number(int, minimum=0, strict=False, what="a trial number >= 0")
_cpu_number = _number(int, minimum=0, strict=False, what="a CPU number >= 0")
_positive_float = _number(float, minimum=0, strict=True, what="a positive number of seconds")
_positive_tolerance = _number(
    float, minimum=0, strict=True, what="a positive relative tolerance such as 1e-4"
)


STORAGE_HELP = "storage URL (default: $CAPSEARCH_STORAGE, else sqlite:///storage/studies.db)"
DATA_DIR_HELP = "folder with local data copies (default: $CAPSEARCH_DATA)"
TRIALS_HELP = "finished trials the study should have in all"
TIMEOUT_HELP = "stop starting trials after S seconds"
STUDY_HELP = "study name (a file in spaces/) or path to a .toml file"
STORED_STUDY_HELP = (
    "study name (a file in spaces/, or a study stored by search.search() from Python) or path "
    "to a .toml file"
)
NO_VERDICT_HELP = (
    "skip the verdict a [verdict] table asks for at the end (capsearch verdict runs it later)"
)


def capsearch_version() -> str:
    """The installed distribution's version, else the package's ``__version__``.

    Example:
        >>> capsearch_version()[0].isdigit()
        True
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("capsearch")
    except PackageNotFoundError:  # run from a checkout that is not installed
        from search import __version__

        return __version__


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (exit 2), as every other bad input is:
    the usage block argparse prints first is replaced by a pointer to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (usage: {self.prog} --help)\n")


def _storage_parent(help_text: str = STORAGE_HELP) -> _OneLineErrors:
    """The shared ``--storage`` flag, as a parent parser."""
    parent = _OneLineErrors(add_help=False)
    parent.add_argument("--storage", help=help_text)
    return parent


def _data_parent() -> _OneLineErrors:
    """The shared ``--data-dir`` and ``--offline`` flags, as a parent parser."""
    parent = _OneLineErrors(add_help=False)
    parent.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    parent.add_argument("--offline", action="store_true", help="never download data")
    return parent


def _budget_parent(
    trials_help: str = TRIALS_HELP, timeout_help: str = TIMEOUT_HELP
) -> _OneLineErrors:
    """The shared ``--trials`` and ``--timeout`` flags, as a parent parser."""
    parent = _OneLineErrors(add_help=False)
    parent.add_argument("--trials", type=_positive_int, help=trials_help)
    parent.add_argument("--timeout", type=_positive_float, help=timeout_help)
    parent.add_argument(
        "--allow-narrowed",
        action="store_true",
        help="resume a stored study whose study file only narrowed its space or added choices",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (kept importable for the docs tests).

    Flags several commands share come from parent parsers: ``--storage``; ``--data-dir`` and
    ``--offline``; ``--trials`` and ``--timeout``.
    """
    parser = _OneLineErrors(
        prog="capsearch",
        description="Search capacity and regularization of Keras models with Optuna.",
    )
    parser.add_argument("--version", action="version", version=f"capsearch {capsearch_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    storage = _storage_parent()
    data = _data_parent()
    budget = _budget_parent()
    trial_runs = [budget, storage, data]  # the commands that run trials

    run = sub.add_parser(
        "run", parents=trial_runs, help="create or resume a study and run its trials"
    )
    run.add_argument("study", help=STUDY_HELP)
    run.add_argument("--no-verdict", action="store_true", help=NO_VERDICT_HELP)
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser(
        "list", parents=[storage], help="list shipped study files and stored studies"
    )
    lst.add_argument("--json", action="store_true", help="print the rows as JSON")
    lst.set_defaults(func=cmd_list)

    show = sub.add_parser("show", parents=[storage], help="show one stored study's best trials")
    show.add_argument("study", help="study name")
    show.add_argument("--top", type=_positive_int, default=10, help="how many trials (default 10)")
    show.add_argument("--json", action="store_true", help="print the study as JSON")
    show.set_defaults(func=cmd_show)

    delete = sub.add_parser(
        "delete", parents=[storage], help="delete a stored study with its trials and plots"
    )
    delete.add_argument("study", help="study name")
    delete.add_argument("--yes", action="store_true", help="do not ask first (for scripts)")
    delete.set_defaults(func=cmd_delete)

    dashboard = sub.add_parser(
        "dashboard", parents=[storage], help="serve optuna-dashboard on the storage"
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    dashboard.add_argument("--port", type=_positive_int, default=8080, help="port (default 8080)")
    dashboard.set_defaults(func=cmd_dashboard)

    proxy = sub.add_parser(
        "proxy",
        parents=[storage],
        help="serve the storage to workers through Optuna's gRPC proxy (--storage grpc://...)",
    )
    proxy.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    proxy.add_argument("--port", type=_positive_int, default=13000, help="port (default 13000)")
    proxy.add_argument(
        "--cpu",
        type=_cpu_number,
        help="run on this one CPU (Linux): the proxy uses one core at most, and on one it "
        "spends about half the CPU time per trial",
    )
    proxy.set_defaults(func=cmd_proxy)

    report = sub.add_parser(
        "report",
        parents=[storage],
        help="write an HTML report and PNG figures of a stored study",
    )
    report.add_argument("study", help="study name")
    report.add_argument(
        "--out", type=Path, help="folder of the report (default: storage/reports/<study>)"
    )
    report.set_defaults(func=cmd_report)

    validate = sub.add_parser("validate", help="check study files without running anything")
    validate.add_argument("studies", nargs="*", help="names or paths (default: every study)")
    validate.add_argument(
        "--data",
        action="store_true",
        help="also load each study's data (files read, arrays checked; no model is built)",
    )
    validate.set_defaults(func=cmd_validate)

    worker = sub.add_parser(
        "worker",
        parents=trial_runs,
        help="run trials of a study as one of many workers (on any host)",
    )
    worker.add_argument("study", help=STUDY_HELP)
    worker.add_argument("--worker-id", help="name in logs and on trials (default: host-pid)")
    worker.add_argument(
        "--no-summary",
        action="store_true",
        help="skip the test evaluation and the summary (set by the workers command)",
    )
    worker.set_defaults(func=cmd_worker)

    workers = sub.add_parser(
        "workers",
        parents=[
            _budget_parent(timeout_help="each worker stops starting trials after S s"),
            storage,
            data,
        ],
        help="create a study, then run N worker processes on it on this host",
    )
    workers.add_argument("study", help=STUDY_HELP)
    workers.add_argument(
        "-n", "--workers", dest="n", type=_positive_int, default=2, help="worker processes"
    )
    workers.add_argument("--no-verdict", action="store_true", help=NO_VERDICT_HELP)
    workers.set_defaults(func=cmd_workers)

    verdict = sub.add_parser(
        "verdict",
        parents=[storage, data],
        help="answer the study's question: regimes, capacity, regularization, seed noise",
    )
    verdict.add_argument("study", help=STORED_STUDY_HELP)
    verdict.add_argument(
        "-n", "--workers", dest="n", type=_positive_int, default=1, help="worker processes"
    )
    verdict.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verdict.add_argument(
        "--no-train", action="store_true", help="compute from stored re-trainings only"
    )
    verdict.add_argument("--worker-only", action="store_true", help=argparse.SUPPRESS)
    verdict.add_argument("--worker-id", help=argparse.SUPPRESS)
    verdict.set_defaults(func=cmd_verdict)

    copy = sub.add_parser(
        "copy",
        parents=[_storage_parent("source " + STORAGE_HELP)],
        help="copy a study with all its trials and plots to another storage",
    )
    copy.add_argument("study", help="study name")
    copy.add_argument("--from", dest="from_url", help=argparse.SUPPRESS)  # old name of --storage
    copy.add_argument("--to", dest="to_url", required=True, help="destination storage URL")
    copy.set_defaults(func=cmd_copy)

    kt_budget = _budget_parent(
        trials_help="at most this many KerasTuner trials",
        timeout_help="start no trial after S seconds",
    )
    kt_storage = _storage_parent(STORAGE_HELP + "; the Optuna study compared with")
    kt = sub.add_parser(
        "kt",
        parents=[kt_budget, kt_storage, data],
        help="search any study with KerasTuner itself and compare with Optuna",
    )
    kt.add_argument("study", help=STUDY_HELP)
    kt.add_argument(
        "--tuner", choices=("hyperband", "bayesian"), default="hyperband", help="default hyperband"
    )
    kt.add_argument(
        "--max-epochs", type=_positive_int, help="epochs of the longest trial (default: study's)"
    )
    kt.add_argument("--resume", action="store_true", help="continue the previous KerasTuner run")
    kt.set_defaults(func=cmd_kt)

    export = sub.add_parser(
        "export",
        parents=[storage, data],
        help="re-train a stored trial and save it as a .keras model with its metrics",
    )
    export.add_argument("study", help=STORED_STUDY_HELP)
    export.add_argument("--trial", type=_non_negative_int, help="trial number (default: the best)")
    export.add_argument("--out", type=Path, help="output folder (default: storage/exports/<study>)")
    export.add_argument("--code", action="store_true", help="also print plain Keras code")
    export.set_defaults(func=cmd_export)

    rerun = sub.add_parser(
        "rerun",
        parents=[storage, data],
        help="re-run a stored trial with its seed; exit 1 unless it reproduces",
    )
    rerun.add_argument("study", help=STORED_STUDY_HELP)
    rerun.add_argument("trial", type=_non_negative_int, help="trial number")
    rerun.add_argument(
        "--tolerance",
        type=_positive_tolerance,
        default=None,
        help="relative tolerance on the stored value (default 1e-4)",
    )
    rerun.set_defaults(func=cmd_rerun)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; bad input exits 2 with one line on stderr.

    Bad input is any :class:`~search.errors.FatalError`: a study file, data, a storage, or a
    ``CAPSEARCH_*`` variable whose value breaks its rule (:class:`~search.errors.SettingsError`).
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FatalError as exc:  # SettingsError included
        print(f"capsearch: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SearchError as exc:  # e.g. trials that keep failing: stored, but no progress
        print(f"capsearch: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        print(
            "capsearch: interrupted; finished trials are stored, run again to resume",
            file=sys.stderr,
        )
        return _interrupted_code(exc)
    except BrokenPipeError:  # `capsearch show ... | head`: the reader left, as it may
        # Python's own recipe: point stdout at devnull so the exit flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _interrupted_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as shells report it: 130 for SIGINT (Ctrl-C), 143 for SIGTERM.

    Example:
        >>> from search.errors import WorkerStopped
        >>> _interrupted_code(KeyboardInterrupt()), _interrupted_code(WorkerStopped("SIGTERM"))
        (130, 143)
    """
    import signal

    name = getattr(exc, "signal_name", "SIGINT")
    number = getattr(signal, str(name), signal.SIGINT)
    return 128 + int(number)


if __name__ == "__main__":
    sys.exit(main())
