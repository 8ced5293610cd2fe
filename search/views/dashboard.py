"""``capsearch dashboard``: optuna-dashboard on the study storage, local by default."""

from __future__ import annotations

import ipaddress

from search.storage.opening import open_storage
from search.storage.urls import mask_url, resolve_storage_url

LOOPBACK = "127.0.0.1"


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
    """
    from optuna_dashboard import run_server

    from search.views.trial_plots import artifact_dir, open_artifact_store

    url = resolve_storage_url(storage)
    rdb = open_storage(url, create=False)
    store = open_artifact_store(url)
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
    run_server(rdb, host=host, port=port, artifact_store=store)
