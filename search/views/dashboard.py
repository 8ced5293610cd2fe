"""``capsearch dashboard``: optuna-dashboard on the study storage, local by default."""

from __future__ import annotations

import ipaddress
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
    server = bind_server(host, port, wsgi(rdb, artifact_store=store))
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
