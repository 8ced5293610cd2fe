"""``capsearch dashboard`` serves the stored studies over HTTP, locally by default."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import optuna
from optuna_dashboard import wsgi

from search._compat.optuna_dashboard import BUNDLE_TAG, PLOT_BACKEND_KEY
from search.views.dashboard import DEFAULTS_PATH, is_loopback, with_optuna_plots

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")


def _call(app: Any, path: str, **environ: str) -> tuple[str, dict[str, str], bytes]:
    """One request to a WSGI app: status, headers and body."""
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        answer.update(status=status, headers=dict(headers))
        return lambda data: None

    env = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "127.0.0.1"}
    env.update(SERVER_PORT="8080", SERVER_PROTOCOL="HTTP/1.1", **environ)
    env.update({"wsgi.url_scheme": "http", "wsgi.input": io.BytesIO()})
    body = b"".join(app(env, start_response))
    return answer["status"], answer["headers"], body


def test_the_page_loads_the_plot_default_before_the_dashboard(tmp_path: Path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'studies.db'}")
    raw = wsgi(storage)
    app = with_optuna_plots(raw)
    status, headers, page = _call(app, "/dashboard/studies/1/analytics")
    tag = f'<script src="{DEFAULTS_PATH}"></script>'.encode()
    assert status.startswith("200") and page.count(tag + BUNDLE_TAG) == 1
    assert int(headers["Content-Length"]) == len(page)
    assert "script-src 'self'" in headers["Content-Security-Policy"]  # the script is same-origin
    assert page.replace(tag, b"") == _call(raw, "/dashboard")[2]  # nothing else changed
    # A conditional or partial request still gets the whole page with the tag; HEAD no body.
    cached = _call(app, "/dashboard", HTTP_IF_NONE_MATCH=headers["Etag"], HTTP_RANGE="bytes=0-9")
    assert cached[0].startswith("200") and tag in cached[2]
    head = _call(app, "/dashboard", REQUEST_METHOD="HEAD")
    assert head[2] == b"" and head[1]["Content-Length"] == headers["Content-Length"]
    status, headers, script = _call(app, DEFAULTS_PATH)
    assert headers["Content-Type"] == "text/javascript"
    assert script.decode() == (
        f"if (window.localStorage.getItem('{PLOT_BACKEND_KEY}') === null) "
        f"window.localStorage.setItem('{PLOT_BACKEND_KEY}', 'true');\n"
    )
    assert _call(app, "/api/studies")[2] == _call(raw, "/api/studies")[2]  # the API as it was


def test_dashboard_lists_the_study_and_its_trials(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="shown", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=3)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "search", "dashboard", "--storage", url, "--port", str(port)],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as response:
                    body = json.load(response)
                break
            except OSError:
                time.sleep(0.2)
        assert body is not None, "dashboard did not answer"
        names = [s["study_name"] for s in body["study_summaries"]]
        assert names == ["shown"]
        study_id = body["study_summaries"][0]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}") as response:
            detail = json.load(response)
        assert len(detail["trials"]) == 3
    finally:
        server.terminate()
        server.wait(timeout=10)
