"""GPU and CPU placement of worker processes.

The parent process plans (:func:`detect_gpus`, :func:`plan_workers`) without importing
TensorFlow: it only decides, per worker, which GPU the worker sees and how many CPU threads it
may use, as environment variables to set before the worker starts. Inside the worker,
:func:`configure_tensorflow` applies the thread counts and GPU memory growth before any model
is built.

Example:
    >>> import os
    >>> plan = plan_workers(4, detect_gpus(), os.cpu_count() or 1)
    >>> env = {**os.environ, **plan[0].env}  # for subprocess.Popen(..., env=env)
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from search import settings

__all__ = [
    "ALLOW_GROWTH_ENV",
    "INTER_OP_ENV",
    "INTRA_OP_ENV",
    "WorkerPlacement",
    "available_cpus",
    "configure_tensorflow",
    "detect_gpus",
    "plan_workers",
]

_logger = logging.getLogger(__name__)

INTRA_OP_ENV = settings.INTRA_OP_THREADS.name
"""Environment variable: threads TensorFlow uses inside one op in a worker."""

INTER_OP_ENV = settings.INTER_OP_THREADS.name
"""Environment variable: ops TensorFlow runs at once in a worker."""

ALLOW_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"
"""TensorFlow's own switch: allocate GPU memory as needed instead of all of it at start."""

GPU_INTER_OP_THREADS = 2
"""Inter-op threads of a GPU worker (host-side input pipeline and kernel launches overlap)."""

CPU_INTER_OP_THREADS = 1
"""Inter-op threads of a CPU worker: its cores go to intra-op parallelism."""

_NVIDIA_SMI_TIMEOUT_S = 10


@dataclass(frozen=True)
class WorkerPlacement:
    """Where one worker process runs and how many threads it may use.

    Attributes:
        worker_id: 0-based index of the worker.
        gpu: GPU id the worker sees (as in ``CUDA_VISIBLE_DEVICES``), or ``None`` for CPU only.
        env: Environment variables to add to the worker's environment before it starts.
        intra_op_threads: Threads TensorFlow uses inside one op.
        inter_op_threads: Ops TensorFlow runs in parallel.
    """

    worker_id: int
    gpu: str | None
    env: dict[str, str] = field(hash=False)
    intra_op_threads: int
    inter_op_threads: int


def available_cpus() -> int:
    """Return the number of CPU cores this process may run on (affinity and cgroups aside).

    Returns:
        At least 1.

    Example:
        >>> available_cpus() >= 1
        True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _parse_visible_devices(value: str) -> list[str]:
    """GPU ids in a ``CUDA_VISIBLE_DEVICES`` value.

    Like CUDA, the list ends at the first ``-1``: ``"-1"`` and ``""`` hide every GPU.
    """
    gpus: list[str] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if item == "-1":
            break
        gpus.append(item)
    return gpus


def detect_gpus() -> list[str]:
    """Return the ids of the GPUs visible on this host, without importing TensorFlow.

    ``CUDA_VISIBLE_DEVICES`` wins when set (empty or ``-1`` means no GPU); otherwise the indices
    reported by ``nvidia-smi --query-gpu=index --format=csv,noheader``. No ``nvidia-smi``, a
    failure or a 10 s timeout mean no GPU.

    Returns:
        GPU ids as strings, e.g. ``["0", "1"]``; empty without GPU.

    Example:
        >>> os.environ["CUDA_VISIBLE_DEVICES"] = "0,2"
        >>> detect_gpus()
        ['0', '2']
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return _parse_visible_devices(visible)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        result = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=_NVIDIA_SMI_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        _logger.debug("nvidia-smi failed: %s", exc)
        return []
    if result.returncode != 0:
        _logger.debug("nvidia-smi exited with %d: %s", result.returncode, result.stderr.strip())
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip().isdigit()]


def plan_workers(n_workers: int, gpus: Sequence[str], cpu_count: int) -> list[WorkerPlacement]:
    """Place ``n_workers`` worker processes on the GPUs and divide the CPU cores between them.

    With GPUs, worker ``i`` sees only ``gpus[i % len(gpus)]`` (round-robin, so several workers
    share a GPU when there are more workers than GPUs) and TensorFlow's memory growth is forced
    on so that they fit together; each gets ``max(1, cpu_count // n_workers)`` intra-op and 2
    inter-op threads. Without GPUs each worker gets ``max(1, cpu_count // n_workers)`` intra-op
    threads and 1 inter-op thread, so the workers together do not oversubscribe the cores.

    The thread counts are also put in the environment (``CAPSEARCH_INTRA_OP_THREADS``,
    ``CAPSEARCH_INTER_OP_THREADS``, ``OMP_NUM_THREADS``) for :func:`configure_tensorflow`.

    Args:
        n_workers: Number of worker processes, at least 1.
        gpus: GPU ids, e.g. from :func:`detect_gpus`; empty for CPU only.
        cpu_count: CPU cores to divide, e.g. from :func:`available_cpus`.

    Returns:
        One placement per worker, in worker order.

    Raises:
        ValueError: ``n_workers`` or ``cpu_count`` is below 1.

    Example:
        >>> [p.gpu for p in plan_workers(4, ["0", "1"], cpu_count=16)]
        ['0', '1', '0', '1']
        >>> plan_workers(4, [], cpu_count=2)[0].intra_op_threads
        1
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be an integer of at least 1, got {n_workers!r}")
    if isinstance(cpu_count, bool) or not isinstance(cpu_count, int) or cpu_count < 1:
        raise ValueError(f"cpu_count must be an integer of at least 1, got {cpu_count!r}")
    gpu_ids = [str(g) for g in gpus]
    intra = max(1, cpu_count // n_workers)
    inter = GPU_INTER_OP_THREADS if gpu_ids else CPU_INTER_OP_THREADS
    placements = []
    for worker_id in range(n_workers):
        env = {
            INTRA_OP_ENV: str(intra),
            INTER_OP_ENV: str(inter),
            "OMP_NUM_THREADS": str(intra),
        }
        gpu: str | None = None
        if gpu_ids:
            gpu = gpu_ids[worker_id % len(gpu_ids)]
            env["CUDA_VISIBLE_DEVICES"] = gpu
            env[ALLOW_GROWTH_ENV] = "true"
        placements.append(
            WorkerPlacement(
                worker_id=worker_id,
                gpu=gpu,
                env=env,
                intra_op_threads=intra,
                inter_op_threads=inter,
            )
        )
    return placements


def configure_tensorflow(
    intra_op_threads: int | None = None,
    inter_op_threads: int | None = None,
    *,
    memory_growth: bool = True,
    mixed_precision: bool = False,
    _tf: ModuleType | Any | None = None,
    _keras: ModuleType | Any | None = None,
) -> list[str]:
    """Set TensorFlow's threads, GPU memory growth and precision in a worker process.

    Call it in the worker before any model or tensor is built. Thread counts come from the
    arguments, else from ``CAPSEARCH_INTRA_OP_THREADS`` / ``CAPSEARCH_INTER_OP_THREADS`` (set by
    :func:`plan_workers`); ``None`` or 0 leaves TensorFlow's default. When TensorFlow is already
    initialised, settings it refuses are skipped quietly (logged at debug level).

    Args:
        intra_op_threads: Threads inside one op.
        inter_op_threads: Ops run in parallel.
        memory_growth: Let every visible GPU allocate memory as needed, so that several
            workers can share one device.
        mixed_precision: Use the Keras ``mixed_float16`` policy; ignored without a GPU.
        _tf: TensorFlow-like module to use instead of ``tensorflow`` (for tests).
        _keras: Keras-like module to use instead of ``keras`` (for tests).

    Returns:
        Names of the visible GPUs, e.g. ``["/physical_device:GPU:0"]``; empty on CPU.

    Raises:
        SettingsError: A thread count in the environment is not an integer >= 0; checked
            before TensorFlow is imported.

    Example:
        >>> gpus = configure_tensorflow(mixed_precision=True)  # in the worker, first thing
    """
    intra = intra_op_threads if intra_op_threads is not None else settings.intra_op_threads()
    inter = inter_op_threads if inter_op_threads is not None else settings.inter_op_threads()
    tf: ModuleType | Any
    if _tf is not None:
        tf = _tf
    else:
        import tensorflow  # heavy: imported only inside workers

        tf = tensorflow

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:  # TensorFlow is already initialised
        _logger.debug("Thread settings not applied: %s", exc)

    gpus = list(tf.config.list_physical_devices("GPU"))
    if memory_growth:
        for gpu in gpus:
            try:
                tf.config.experimental.set_memory_growth(gpu, True)
            except RuntimeError as exc:  # GPUs already initialised
                _logger.debug("Memory growth not set on %s: %s", getattr(gpu, "name", gpu), exc)

    if mixed_precision:
        if gpus:
            keras: ModuleType | Any
            if _keras is not None:
                keras = _keras
            else:
                import keras as keras_module

                keras = keras_module
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            _logger.info("Mixed precision skipped: no GPU is visible.")
    return [str(getattr(gpu, "name", gpu)) for gpu in gpus]
