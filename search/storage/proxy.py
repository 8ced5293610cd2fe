"""The client side of Optuna's gRPC storage proxy: ``--storage grpc://host:port``.

``capsearch proxy`` (:mod:`search.distributed.proxy_server`) runs Optuna's own proxy server
(:func:`optuna.storages.run_grpc_proxy_server`) beside the database; workers and every other
command reach it through :class:`ProxyStorage`, Optuna's :class:`~optuna.storages.GrpcStorageProxy`
with what a capsearch worker needs on top. Nothing but Optuna's own storage calls crosses the
wire; three conventions ride on them (the server side interprets them, see
``docs/many-workers.md``):

* **handshake**: ``get_study_id_from_name(HANDSHAKE_NAME)`` answers :data:`PROTOCOL` from a
  capsearch proxy (a plain Optuna proxy says "no such study"), so a worker never runs on a
  proxy that would not keep the budget;
* **heartbeats**: ``set_trial_system_attr(trial_id, HEARTBEAT_KEY, n)`` is recorded by the proxy
  as Optuna's own heartbeat of the trial (its ``trial_heartbeats`` table, the database's clock);
* **one budget**: ``create_new_trial`` with a template whose system attribute
  :data:`RESERVE_KEY` holds the target is a reservation: the proxy takes the study lock,
  counts, and either takes a WAITING trial, creates a RUNNING one, or answers "budget taken".
  The request carries a token the worker chose, stored on the trial as
  :data:`RESERVATION_KEY`: a reservation sent again (the answer was lost when the proxy or its
  database went away) gets the trial it already made instead of a second one. The proxy
  records the trial's first heartbeat before answering, so the worker sends none of its own
  until the first interval has passed.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.errors import StorageError
from search.storage.urls import mask_text

__all__ = [
    "BUDGET_TAKEN",
    "DEFAULT_PROXY_PORT",
    "HANDSHAKE_NAME",
    "HEARTBEAT_KEY",
    "LOCK_STUDY_PREFIX",
    "PROTOCOL",
    "RESERVATION_KEY",
    "RESERVE_KEY",
    "ProxyStorage",
    "is_proxy_url",
    "open_proxy",
    "parse_proxy_url",
]

DEFAULT_PROXY_PORT = 13000
"""Optuna's default port of the proxy server."""

PROTOCOL = 2
"""Version of the conventions above; answered by the handshake (2: reservation tokens, and the
first heartbeat recorded with the reservation)."""

HANDSHAKE_NAME = "capsearch:proxy-handshake"
HEARTBEAT_KEY = "capsearch:heartbeat"
RESERVE_KEY = "capsearch:reserve"
RESERVATION_KEY = "capsearch:reservation"
"""Trial system attribute: the token of the reservation that made the trial RUNNING."""
LOCK_STUDY_PREFIX = "capsearch-lock:"
"""Name prefix of the studies that serve as study locks through a proxy (never listed)."""
BUDGET_TAKEN = "capsearch budget taken"
"""Start of the "no slot left" answer to a reservation (a NOT_FOUND status of the proxy)."""

_URL_RE = re.compile(
    r"^grpc://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::(?P<port>[^/]*))?/?$"
)
_READY_TIMEOUT_S = 5.0
_REFUSAL_RE = re.compile(r"(\d+) finished \+ (\d+) running of \d+")


def is_proxy_url(url: str) -> bool:
    """Whether ``url`` names a storage proxy (``grpc://...``).

    Example:
        >>> is_proxy_url("grpc://127.0.0.1:13000"), is_proxy_url("sqlite:///x.db")
        (True, False)
    """
    return url.strip().lower().startswith("grpc://")


def parse_proxy_url(url: str) -> tuple[str, int]:
    """Host and port of ``grpc://host[:port]`` (port 13000 when left out).

    Raises:
        StorageError: Not of that form, or the port is not a number in 1–65535.

    Example:
        >>> parse_proxy_url("grpc://db-proxy.internal:13001")
        ('db-proxy.internal', 13001)
        >>> parse_proxy_url("grpc://127.0.0.1")
        ('127.0.0.1', 13000)
    """
    match = _URL_RE.match(url.strip())
    if match is None:
        raise StorageError(
            f"Cannot open storage '{url}': not a proxy address; pass --storage as "
            f"grpc://HOST:PORT, e.g. grpc://127.0.0.1:{DEFAULT_PROXY_PORT}"
        )
    port_text = match.group("port")
    if port_text in (None, ""):
        return match.group("host").strip("[]"), DEFAULT_PROXY_PORT
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise StorageError(
            f"Cannot open storage '{url}': port {port_text!r} is not a number in 1-65535; "
            f"pass --storage as grpc://HOST:PORT, e.g. grpc://127.0.0.1:{DEFAULT_PROXY_PORT}"
        )
    return match.group("host").strip("[]"), int(port_text)


class ProxyStorage(optuna.storages.GrpcStorageProxy):
    """Optuna's gRPC proxy client with a capsearch worker's extras: heartbeats and reservations.

    Args:
        url: ``grpc://host:port``.
        heartbeat_interval: Seconds between heartbeats of a running trial (None: no heartbeats).
    """

    def __init__(self, url: str, *, heartbeat_interval: int | None = None) -> None:
        host, port = parse_proxy_url(url)
        super().__init__(host=host, port=port)
        self.url = f"grpc://{host}:{port}"
        self.heartbeat_interval = heartbeat_interval
        # Trials whose first heartbeat the proxy recorded with the reservation.
        self._beaten: set[int] = set()
        self.refused: tuple[int, int] | None = None
        """``(finished, running)`` as the proxy counted them when it last refused a
        reservation: a worker can tell "budget reached" from "wait" without reading trials."""

    # The heartbeat API of Optuna's RDB storage, as the trial loop uses it.
    def record_heartbeat(self, trial_id: int) -> None:
        """Record a heartbeat of ``trial_id``: the proxy writes Optuna's heartbeat row.

        The first one after :meth:`reserve_trial` is already recorded (with the reservation):
        that call sends nothing.
        """
        if trial_id in self._beaten:
            self._beaten.discard(trial_id)
            return
        self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, 1)

    def get_heartbeat_interval(self) -> int | None:
        """Seconds between heartbeats, as :class:`~optuna.storages.RDBStorage` answers it."""
        return self.heartbeat_interval

    def remove_session(self) -> None:
        """Nothing to release: the proxy holds the database sessions."""

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        """Optuna's call; a reservation sent again (after an outage) is marked as such.

        The retry sends the same template again, so marking its request here after the first
        send tells the proxy to look for the trial an earlier send made; first sends skip that
        query.
        """
        try:
            return super().create_new_trial(study_id, template_trial)
        finally:
            request = template_trial.system_attrs.get(RESERVE_KEY) if template_trial else None
            if isinstance(request, dict):
                request["again"] = True

    def reserve_trial(
        self, study_id: int, user_attrs: Mapping[str, Any], request: Mapping[str, Any]
    ) -> int | None:
        """Ask the proxy for the next trial of the study within its budget.

        Args:
            study_id: The study.
            user_attrs: Stored on the trial with it (the worker's id).
            request: ``{"target": n, "grace": s, "max_retry": r}``: the budget and the liveness
                settings the proxy applies to the study's dead workers. A ``token`` is added
                (one per reservation, the same when the call is sent again after an outage).

        Returns:
            The id of a RUNNING trial (a WAITING one taken, or a new one), its first heartbeat
            recorded, or None when the study's budget is taken (``finished + running >=
            target``).
        """
        request = {**request, "token": uuid.uuid4().hex}
        template = FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs=dict(user_attrs),
            system_attrs={RESERVE_KEY: dict(request)},
            intermediate_values={},
            trial_id=-1,
        )
        try:
            trial_id = self.create_new_trial(study_id, template_trial=template)
        except KeyError as exc:
            details = getattr(exc.__cause__, "details", None)
            # The server sends str(KeyError(...)): the message in quotes.
            text = str(details() or "").strip("'\"") if callable(details) else ""
            if text.startswith(BUDGET_TAKEN):
                counts = _REFUSAL_RE.search(text)
                self.refused = (int(counts[1]), int(counts[2])) if counts else None
                return None
            raise
        self._beaten.add(trial_id)
        return trial_id


def open_proxy(url: str, *, heartbeat_interval: int | None = None) -> ProxyStorage:
    """Connect to the capsearch proxy at ``url`` and check that it is one.

    Raises:
        StorageError: Malformed address, no server answering there within 5 s, or a server
            that is not a capsearch proxy (one line naming the address and the fix).
    """
    try:
        storage = ProxyStorage(url, heartbeat_interval=heartbeat_interval)
    except StorageError as exc:
        raise StorageError(mask_text(str(exc), url)) from None
    shown = storage.url
    try:
        storage.wait_server_ready(timeout=_READY_TIMEOUT_S)
    except ConnectionError:
        storage.close()
        raise StorageError(
            f"Cannot open storage '{shown}': no storage proxy answers there within "
            f"{_READY_TIMEOUT_S:.0f} s; start one with `capsearch proxy --storage URL "
            "--port PORT` on that host, or check host and port"
        ) from None
    try:
        answer = storage.get_study_id_from_name(HANDSHAKE_NAME)
    except KeyError:
        answer = None
    except Exception as exc:
        storage.close()
        details = getattr(exc, "details", None)
        text = " ".join(str(details() if callable(details) else exc).split())[:200]
        raise StorageError(
            f"Cannot open storage '{shown}': the server there is not a storage proxy ({text}); "
            "check the port, or start one with `capsearch proxy --storage URL`"
        ) from None
    if answer != PROTOCOL:
        storage.close()
        raise StorageError(
            f"Cannot open storage '{shown}': it is not a capsearch proxy (protocol {answer}, "
            f"need {PROTOCOL}), so it would not keep the trial budget; run "
            "`capsearch proxy --storage URL` there instead of a plain Optuna proxy"
        )
    return storage
