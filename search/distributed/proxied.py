"""A worker's side of the budget and the heartbeats through Optuna's gRPC proxy.

Through ``grpc://`` the worker holds no database connection, so neither the study lock nor
Optuna's heartbeat table is within its reach. Both cross the proxy as Optuna storage calls
(:mod:`search.storage.proxy`): a reservation, which the proxy answers under the study lock
(:mod:`search.distributed.proxy_server`), and a heartbeat attribute, which the proxy records as
Optuna's heartbeat of the trial.
"""

from __future__ import annotations

from typing import Any

import optuna

from search._compat import optuna as optuna_compat
from search.distributed.liveness import Liveness
from search.storage.proxy import ProxyStorage

__all__ = ["heartbeat_storage", "proxy_storage", "reserve_through_proxy"]


def proxy_storage(study: optuna.Study) -> ProxyStorage | None:
    """The proxy client under ``study``, or None when the study is on a database directly."""
    storage = optuna_compat.study_storage(study)
    return storage if isinstance(storage, ProxyStorage) else None


def heartbeat_storage(study: optuna.Study) -> Any:
    """What records a running trial's heartbeats: the RDB storage, the proxy client, or None."""
    rdb = optuna_compat.rdb_storage(study)
    return rdb if rdb is not None else proxy_storage(study)


def reserve_through_proxy(
    study: optuna.Study,
    proxy: ProxyStorage,
    user_attrs: dict[str, Any],
    target: int,
    liveness: Liveness,
) -> int | None:
    """Reserve the study's next trial within ``target`` through the proxy.

    The proxy counts and reserves under the study lock, as the trial loop does on a database.

    Returns:
        The trial id (RUNNING, carrying ``user_attrs``), or None when the budget is taken.
    """
    optuna_compat.forget_cached_trials(study)
    request = {
        "target": target,
        "heartbeat": liveness.heartbeat_interval,
        "grace": liveness.grace_period,
        "max_retry": liveness.max_retry,
    }
    return proxy.reserve_trial(optuna_compat.study_id(study), user_attrs, request)
