"""Tests of search.distributed.devices with simulated GPU lists and a fake TensorFlow module."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from search.distributed.devices import (
    ALLOW_GROWTH_ENV,
    INTER_OP_ENV,
    INTRA_OP_ENV,
    WorkerPlacement,
    available_cpus,
    configure_tensorflow,
    detect_gpus,
    plan_workers,
)
from search.errors import SettingsError

REPO_ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# plan_workers
# --------------------------------------------------------------------------------------------


def test_four_workers_on_two_gpus_round_robin() -> None:
    plan = plan_workers(4, ["0", "1"], cpu_count=16)
    assert [p.worker_id for p in plan] == [0, 1, 2, 3]
    assert [p.gpu for p in plan] == ["0", "1", "0", "1"]
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plan] == ["0", "1", "0", "1"]
    for p in plan:
        assert p.env[ALLOW_GROWTH_ENV] == "true"
        assert (p.intra_op_threads, p.inter_op_threads) == (4, 2)
        assert p.env[INTRA_OP_ENV] == "4" and p.env[INTER_OP_ENV] == "2"


def test_three_workers_on_eight_gpus_use_the_first_three() -> None:
    plan = plan_workers(3, [str(i) for i in range(8)], cpu_count=8)
    assert [p.gpu for p in plan] == ["0", "1", "2"]
    assert [p.intra_op_threads for p in plan] == [2, 2, 2]


def test_cpu_only_divides_the_cores() -> None:
    plan = plan_workers(4, [], cpu_count=2)
    assert len(plan) == 4
    for p in plan:
        assert p.gpu is None
        assert (p.intra_op_threads, p.inter_op_threads) == (1, 1)
        assert p.env == {INTRA_OP_ENV: "1", INTER_OP_ENV: "1", "OMP_NUM_THREADS": "1"}
        assert "CUDA_VISIBLE_DEVICES" not in p.env and ALLOW_GROWTH_ENV not in p.env


def test_one_cpu_worker_gets_every_core() -> None:
    (p,) = plan_workers(1, [], cpu_count=16)
    assert (p.intra_op_threads, p.inter_op_threads) == (16, 1)
    assert p.env["OMP_NUM_THREADS"] == "16"


def test_cores_are_not_oversubscribed() -> None:
    for n in range(1, 9):
        plan = plan_workers(n, [], cpu_count=8)
        assert sum(p.intra_op_threads for p in plan) <= 8


@pytest.mark.parametrize("n", [0, -1])
def test_no_worker_is_an_error(n: int) -> None:
    with pytest.raises(ValueError, match="n_workers must be an integer of at least 1"):
        plan_workers(n, ["0"], cpu_count=4)


def test_bad_cpu_count_is_an_error() -> None:
    with pytest.raises(ValueError, match="cpu_count"):
        plan_workers(2, [], cpu_count=0)


def test_placement_is_frozen_and_hashable() -> None:
    p = plan_workers(1, ["3"], cpu_count=2)[0]
    assert isinstance(p, WorkerPlacement)
    with pytest.raises(AttributeError):
        p.gpu = "4"  # type: ignore[misc]
    assert hash(p) == hash(plan_workers(1, ["3"], cpu_count=2)[0])


def test_available_cpus_is_positive() -> None:
    assert available_cpus() >= 1


# --------------------------------------------------------------------------------------------
# detect_gpus
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0,2", ["0", "2"]),
        ("", []),
        ("-1", []),
        (" 1 , 3 ", ["1", "3"]),
        ("0,-1,1", ["0"]),  # CUDA stops at the first invalid id
        ("GPU-5d1a0b2c", ["GPU-5d1a0b2c"]),
    ],
)
def test_cuda_visible_devices_is_parsed(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
    assert detect_gpus() == expected


def _fake_nvidia_smi(folder: Path, script: str) -> None:
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{script}\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)


def test_nvidia_smi_is_used_without_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_nvidia_smi(tmp_path, 'printf "0\\n1\\n"')
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == ["0", "1"]


def test_failing_nvidia_smi_means_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_nvidia_smi(tmp_path, 'echo "NVIDIA-SMI has failed" >&2; exit 9')
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []


def test_no_nvidia_smi_means_no_gpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # empty folder
    assert detect_gpus() == []


# --------------------------------------------------------------------------------------------
# configure_tensorflow with a fake TensorFlow
# --------------------------------------------------------------------------------------------


class FakeTF:
    """Just enough of ``tensorflow`` for configure_tensorflow, recording every call."""

    def __init__(self, n_gpus: int, initialised: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.growth: dict[str, bool] = {}
        self.devices = [
            SimpleNamespace(name=f"/physical_device:GPU:{i}", device_type="GPU")
            for i in range(n_gpus)
        ]

        def refuse_if_initialised(name: str, value: Any) -> None:
            if initialised:
                raise RuntimeError(f"{name} cannot be modified after initialization.")
            self.calls.append((name, value))

        def set_memory_growth(device: Any, enable: bool) -> None:
            refuse_if_initialised("memory_growth", device.name)
            self.growth[device.name] = enable

        def list_physical_devices(kind: str) -> list[Any]:
            return list(self.devices) if kind == "GPU" else []

        self.config = SimpleNamespace(
            threading=SimpleNamespace(
                set_intra_op_parallelism_threads=lambda n: refuse_if_initialised("intra", n),
                set_inter_op_parallelism_threads=lambda n: refuse_if_initialised("inter", n),
            ),
            experimental=SimpleNamespace(set_memory_growth=set_memory_growth),
            list_physical_devices=list_physical_devices,
        )


class FakeKeras:
    def __init__(self) -> None:
        self.policies: list[str] = []
        self.mixed_precision = SimpleNamespace(set_global_policy=self.policies.append)


def test_memory_growth_is_set_on_every_gpu() -> None:
    tf, keras = FakeTF(n_gpus=3), FakeKeras()
    names = configure_tensorflow(4, 2, mixed_precision=True, _tf=tf, _keras=keras)
    assert names == [f"/physical_device:GPU:{i}" for i in range(3)]
    assert tf.growth == dict.fromkeys(names, True)
    assert ("intra", 4) in tf.calls and ("inter", 2) in tf.calls
    assert keras.policies == ["mixed_float16"]


def test_memory_growth_can_be_turned_off() -> None:
    tf = FakeTF(n_gpus=2)
    configure_tensorflow(1, 1, memory_growth=False, _tf=tf, _keras=FakeKeras())
    assert tf.growth == {}


def test_mixed_precision_is_skipped_without_gpu() -> None:
    tf, keras = FakeTF(n_gpus=0), FakeKeras()
    assert configure_tensorflow(2, 1, mixed_precision=True, _tf=tf, _keras=keras) == []
    assert keras.policies == []
    assert tf.growth == {}


def test_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(INTRA_OP_ENV, "3")
    monkeypatch.setenv(INTER_OP_ENV, "1")
    tf = FakeTF(n_gpus=0)
    configure_tensorflow(_tf=tf, _keras=FakeKeras())
    assert tf.calls == [("intra", 3), ("inter", 1)]


def test_no_threads_anywhere_leaves_tensorflow_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTRA_OP_ENV, raising=False)
    monkeypatch.setenv(INTER_OP_ENV, "0")  # 0: TensorFlow's default
    tf = FakeTF(n_gpus=0)
    configure_tensorflow(_tf=tf, _keras=FakeKeras())
    assert tf.calls == []


def test_bad_thread_counts_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(INTRA_OP_ENV, raising=False)
    monkeypatch.setenv(INTER_OP_ENV, "many")
    tf = FakeTF(n_gpus=0)
    with pytest.raises(SettingsError, match="CAPSEARCH_INTER_OP_THREADS='many' is not allowed"):
        configure_tensorflow(_tf=tf, _keras=FakeKeras())
    assert tf.calls == []


def test_already_initialised_tensorflow_is_quiet() -> None:
    tf = FakeTF(n_gpus=1, initialised=True)
    names = configure_tensorflow(2, 2, _tf=tf, _keras=FakeKeras())
    assert names == ["/physical_device:GPU:0"]
    assert tf.calls == [] and tf.growth == {}


def test_plan_env_reaches_real_tensorflow_in_a_worker() -> None:
    """End to end on this host: the env of a CPU placement sets TensorFlow's thread pools."""
    placement = plan_workers(4, [], cpu_count=8)[0]
    code = (
        "import tensorflow as tf\n"
        "from search.distributed.devices import configure_tensorflow\n"
        "gpus = configure_tensorflow()\n"
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads(), len(gpus))\n"
    )
    env = {
        **os.environ,
        **placement.env,
        "CUDA_VISIBLE_DEVICES": "-1",
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-3:] == ["2", "1", "0"]
