"""``capsearch dashboard``: optuna-dashboard on the study storage, local by default."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from search.errors import DashboardError
from search.storage.opening import open_storage
from search.storage.urls import mask_url, resolve_storage_url

LOOPBACK = "127.0.0.1"
MAX_PORT = 65535


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine.

    Example:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
        (True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_dashboard(storage: str | None, host: str = LOOPBACK, port: int = 8080) -> None:
    """Serve optuna-dashboard on the storage until interrupted.

    The dashboard only reads and annotates studies; with SQLite in WAL mode it does not block
    running workers. It binds to 127.0.0.1 unless another address is asked for explicitly, and
    then warns, since the dashboard has no authentication. Trial plots are served from the
    storage's artifact store (:func:`search.views.trial_plots.artifact_dir`).

    The address is bound before anything is printed, so a port in use or out of range is one
    :class:`~search.errors.DashboardError`; HTTP requests are not logged.

    Raises:
        DashboardError: ``port`` is not in 1-65535, or ``host:port`` cannot be bound.
        StorageError: The storage cannot be opened.
    """
    from optuna_dashboard import wsgi

    from search.views.trial_plots import artifact_dir, open_artifact_store

    if not 1 <= port <= MAX_PORT:
        raise DashboardError(
            f"port {port} is out of range: a TCP port is 1 to {MAX_PORT}; pass --port in range"
        )
    url = resolve_storage_url(storage)
    rdb = open_storage(url, create=False)
    store = open_artifact_store(url)
    server = bind_server(host, port, with_optuna_plots(wsgi(rdb, artifact_store=store)))
    if not is_loopback(host):
        print(
            f"warning: the dashboard has no authentication and is reachable from other hosts "
            f"at http://{host}:{port}/"
        )
    print(
        f"optuna-dashboard on {mask_url(url)} (artifacts in {artifact_dir(url)}): "
        f"http://{host}:{port}/ (Ctrl-C to stop)",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()


DEFAULTS_PATH = "/capsearch/dashboard-defaults.js"
"""Where :func:`with_optuna_plots` serves its script (same origin: the page's CSP allows it)."""

WSGIApp = Callable[..., Iterable[bytes]]

_CONDITIONAL_HEADERS = ("HTTP_IF_MODIFIED_SINCE", "HTTP_IF_NONE_MATCH", "HTTP_RANGE")


def with_optuna_plots(app: WSGIApp) -> WSGIApp:
    """optuna-dashboard's WSGI app whose page draws its plots with Optuna's own functions.

    The dashboard's Settings switch "Use Plotly Python library" is off by default; its
    JavaScript slice and contour plots then order numeric choices as text (``batch_size`` 1024
    before 128). Optuna's ``plot_slice`` and ``plot_contour``, which the switch turns to, order
    them by value, as ``capsearch report`` does. The page gets one script, served from
    :data:`DEFAULTS_PATH` before the dashboard's bundle, that turns the switch on where the
    browser has no setting of its own; a user who turns it off keeps it off.

    Raises:
        RuntimeError: The installed optuna-dashboard's page changed
            (:func:`search._compat.optuna_dashboard.check_page`).
    """
    from search._compat.optuna_dashboard import BUNDLE_TAG, PLOT_BACKEND_KEY, check_page

    check_page()
    script = (
        f"if (window.localStorage.getItem({PLOT_BACKEND_KEY!r}) === null) "
        f"window.localStorage.setItem({PLOT_BACKEND_KEY!r}, 'true');\n"
    ).encode()
    tag = f'<script src="{DEFAULTS_PATH}"></script>'.encode()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == DEFAULTS_PATH:
            start_response(
                "200 OK",
                [("Content-Type", "text/javascript"), ("Content-Length", str(len(script)))],
            )
            return [script]
        if not (path == "/dashboard" or path.startswith("/dashboard/")):
            return app(environ, start_response)
        # The page itself: always the whole of it, so that the tag can go in.
        head = environ.get("REQUEST_METHOD") == "HEAD"
        environ = {k: v for k, v in environ.items() if k not in _CONDITIONAL_HEADERS}
        environ["REQUEST_METHOD"] = "GET"
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured.update(status=status, headers=headers)
            return lambda data: None  # the legacy write() callable: bottle does not use it

        body = b"".join(app(environ, capture))
        status, headers = captured["status"], captured["headers"]
        if status.startswith("200") and BUNDLE_TAG in body:
            body = body.replace(BUNDLE_TAG, tag + BUNDLE_TAG, 1)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        return [b""] if head else [body]

    return serve


class _QuietHandler(WSGIRequestHandler):
    """wsgiref's request handler without its one line per HTTP request on stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (wsgiref's name)
        return


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def bind_server(host: str, port: int, app: Any) -> WSGIServer:
    """A threaded WSGI server bound to ``host:port`` (not serving yet), quiet per request.

    Raises:
        DashboardError: The address cannot be bound (in use, not this host's, not allowed).

    Example:
        >>> server = bind_server("127.0.0.1", 0, lambda environ, start: [])
        >>> server.server_address[1] > 0
        True
        >>> server.server_close()
    """
    try:
        return make_server(
            host, port, app, server_class=_ThreadedServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise DashboardError(
            f"cannot serve the dashboard on {host}:{port} ({reason}); pass another --port "
            "(or --host), or stop what uses it"
        ) from None
