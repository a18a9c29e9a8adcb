"""Where the shards of a parallel stage run: in this process, a local process pool, or a Ray cluster.

A stage that is parallel over images, queries or pairs cuts its work into *tasks*, small
picklable descriptions of one shard of its output (a shard number and the ids it covers, never
arrays), and hands them to an executor with two functions:

- ``setup()``, run once per worker process, opens what every task needs (stores, a model, a
  verifier) and returns it as the worker's *context*;
- ``work(context, task)`` computes one shard, **writes it atomically itself** to storage every
  worker sees, and returns the number of items (images, queries, pairs) it did.

The driver only counts finished tasks: it never holds a shard's data, so the N x M arrays of a
GLDv2-size stage stay on the workers. Since a shard is either wholly on disk or absent, and
each is a deterministic function of its task, a task that is run twice (a Ray worker killed
and its task retried, a job resumed after a kill) writes the same bytes, and the stage's
output is byte-identical whatever the executor and whatever fails.

Executors, by name (`create_executor`):

- ``local``: `workers` processes on this machine (the default, 1: in this process);
- ``ray``: tasks on a Ray cluster, at `address` (``auto``, ``HOST:PORT``, or the environment
  variable ``LMKCOMP_RAY_ADDRESS``), or on a Ray instance started here with `workers` CPUs when
  no address is given. A task asks Ray for the CPUs and GPUs it needs; a task whose worker dies
  is retried by Ray (`RAY_TASK_RETRIES` times).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import socket
import sys
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence

from tqdm import tqdm

from lmkcomp.errors import UserInputError

#: the environment variable naming the Ray cluster when `--address` is not given
ADDRESS_VARIABLE = "LMKCOMP_RAY_ADDRESS"
#: how often Ray runs a task again whose worker died (killed, out of memory, node lost)
RAY_TASK_RETRIES = 3
#: tasks in flight per CPU of the cluster: enough to keep every worker busy between round trips
_TASKS_PER_CPU = 2
#: seconds to wait for a Ray head's port to answer before calling it unreachable
_CONNECT_TIMEOUT = 5.0

EXECUTORS = ("local", "ray")

Setup = Callable[[], Any]
Work = Callable[[Any, Any], int]


@dataclass(frozen=True)
class Resources:
    """What one task needs from the node it runs on (Ray schedules by it; `local` ignores it)."""

    cpus: float = 1.0
    gpus: float = 0.0


@dataclass
class NodeReport:
    """What one node (a host, or a Ray node) did in a run."""

    node: str
    tasks: int = 0
    items: int = 0
    busy_s: float = 0.0

    @property
    def items_per_s(self) -> float:
        """Items per second of task time on this node (summed over its workers' tasks)."""
        return self.items / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class RunSummary:
    """The closing summary of a stage run by an executor."""

    executor: str
    tasks: int = 0
    items: int = 0
    wall_s: float = 0.0
    nodes: dict[str, NodeReport] = field(default_factory=dict)

    def add(self, node: str, items: int, seconds: float) -> None:
        report = self.nodes.setdefault(node, NodeReport(node))
        report.tasks += 1
        report.items += items
        report.busy_s += seconds
        self.tasks += 1
        self.items += items

    def lines(self, unit: str) -> list[str]:
        """A short table: items and throughput per node, then the run's overall rate."""
        rate = self.items / self.wall_s if self.wall_s > 0 else 0.0
        lines = [f"{self.executor}: {self.tasks} tasks, {self.items} {unit}s in {self.wall_s:.1f} s "
                 f"({rate:,.1f} {unit}/s over {len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''})"]
        for report in sorted(self.nodes.values(), key=lambda r: r.node):
            lines.append(f"  node {report.node}: {report.tasks} tasks, {report.items} {unit}s, "
                         f"{report.busy_s:.1f} task-s, {report.items_per_s:,.1f} {unit}/s per worker")
        return lines

    def report(self, unit: str, progress: bool) -> None:
        """Print `lines` to stderr after the progress bar, when there was one and work to report."""
        if progress and self.tasks:
            print("\n".join(self.lines(unit)), file=sys.stderr)

    def as_dict(self) -> dict:
        return {"executor": self.executor, "tasks": self.tasks, "items": self.items, "wall_s": self.wall_s,
                "nodes": [vars(report) | {"items_per_s": report.items_per_s}
                          for report in sorted(self.nodes.values(), key=lambda r: r.node)]}


class Executor(Protocol):
    """Runs a stage's tasks (see the module docstring) and reports what each node did."""

    name: str

    def run(self, setup: Setup, work: Work, tasks: Sequence[Any], *, sizes: Sequence[int], desc: str,
            unit: str, resources: Resources = Resources(), progress: bool = True) -> RunSummary:
        """Run `work(context, task)` for every task, `context = setup()` once per worker; one
        progress bar of `sum(sizes)` items. The first task error is raised (user errors as they
        were raised in the worker) once running tasks have ended; tasks not yet started do not run."""


def _timed(work: Work, context: Any, task: Any) -> tuple[int, str, float]:
    started = time.perf_counter()
    items = work(context, task)
    return int(items), _node_name(), time.perf_counter() - started


def _node_name() -> str:
    """The Ray node running this process (IP and node id) when it is part of a Ray cluster, else
    the host name. Ray is looked up, not imported: importing it takes about a second, which a
    local run (every `verify`, `search`...) must not pay."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        context = ray.get_runtime_context()
        return f"{ray.util.get_node_ip_address()}/{context.get_node_id()[:8]}"
    return socket.gethostname()


# --------------------------------------------------------------------------------------------
# local


# The context of a pool process, made once by `_start_pool_worker`; set only in pool processes.
_pool_context: Any = None


def _start_pool_worker(setup: Setup) -> None:
    global _pool_context
    from lmkcomp.workers import one_thread_each

    one_thread_each()
    _pool_context = setup()


def _run_in_pool(work: Work, task: Any) -> tuple[int, str, float]:
    return _timed(work, _pool_context, task)


@dataclass(frozen=True)
class LocalExecutor:
    """`workers` processes on this machine (spawned, each with one BLAS / OpenCV / torch thread),
    or this process itself for one worker or one task."""

    workers: int = 1
    name: str = "local"

    def run(self, setup: Setup, work: Work, tasks: Sequence[Any], *, sizes: Sequence[int], desc: str,
            unit: str, resources: Resources = Resources(), progress: bool = True) -> RunSummary:
        summary = RunSummary(self.name)
        started = time.perf_counter()
        with tqdm(total=sum(sizes), desc=desc, unit=unit, disable=not progress) as bar:
            if self.workers <= 1 or len(tasks) <= 1:
                context = setup() if tasks else None
                for task in tasks:
                    items, node, seconds = _timed(work, context, task)
                    summary.add(node, items, seconds)
                    bar.update(items)
            else:
                self._run_pool(setup, work, tasks, summary, bar)
        summary.wall_s = time.perf_counter() - started
        summary.report(unit, progress)
        return summary

    def _run_pool(self, setup: Setup, work: Work, tasks: Sequence[Any], summary: RunSummary, bar: tqdm) -> None:
        from lmkcomp.workers import process_pool

        # Spawned, not forked: a child forked while OpenCV's, BLAS's or torch's thread pools are
        # alive can deadlock when it resizes them (cv2.setNumThreads hung in pthread_cond_destroy).
        with process_pool(min(self.workers, len(tasks)), _start_pool_worker, (setup,),
                          mp_context=multiprocessing.get_context("spawn")) as pool:
            futures: list[Future] = [pool.submit(_run_in_pool, work, task) for task in tasks]
            try:
                for future in _completed(futures):
                    items, node, seconds = future.result()
                    summary.add(node, items, seconds)
                    bar.update(items)
            except BaseException:
                # Leaving the pool waits for running tasks; queued ones need not start.
                for future in futures:
                    future.cancel()
                raise


def _completed(futures: Iterable[Future]) -> Iterable[Future]:
    pending = set(futures)
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done


# --------------------------------------------------------------------------------------------
# ray


# The context of a Ray worker process, kept between tasks of the same setup (a worker runs many
# tasks, one at a time, and reloading a model or reopening stores for each would dominate):
# (key, context).
_ray_context: tuple[str, Any] | None = None


def _ray_task(setup_key: str, setup: Setup, work: Work, task: Any) -> tuple[int, str, float]:
    global _ray_context
    if _ray_context is None or _ray_context[0] != setup_key:
        from lmkcomp.workers import one_thread_each

        _ray_context = None  # free the last stage's context before making this one's
        one_thread_each()
        _ray_context = (setup_key, setup())
    return _timed(work, _ray_context[1], task)


def resolve_address(address: str | None) -> str | None:
    """The Ray address to connect to: `address`, else ``$LMKCOMP_RAY_ADDRESS``, else None
    (start a Ray instance on this machine)."""
    return address or os.environ.get(ADDRESS_VARIABLE) or None


def _check_reachable(address: str) -> None:
    """A one-line UserInputError when `address` (HOST:PORT) does not answer, instead of Ray's
    long wait and traceback."""
    host, sep, port = address.rpartition(":")
    if address.startswith(("ray://", "http://", "https://")) or not sep:
        return  # a client or dashboard URL, which Ray checks itself
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=_CONNECT_TIMEOUT):
            pass
    except ValueError:
        raise UserInputError(f"--address {address}: expected auto or HOST:PORT") from None
    except OSError as exc:
        raise UserInputError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                             "one with `ray start --head` or leave --address out to start one here") from None


def connect_ray(address: str | None, cpus: int | None = None):
    """The `ray` module, connected: to the cluster at `address` (see `resolve_address`), or to
    a Ray instance started here with `cpus` CPUs. Raises UserInputError when Ray is missing or
    the cluster cannot be reached."""
    try:
        import ray
    except ImportError:
        raise UserInputError("--executor ray: Ray is not installed (python3 -m pip install 'ray>=2.9')") from None
    if ray.is_initialized():
        return ray
    address = resolve_address(address)
    if address and address != "auto":
        _check_reachable(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # offline: no usage reports
    options: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
    if address:
        options["address"] = address
    else:
        # A local instance: its workers must not wait on the environment's cluster address.
        os.environ.pop("RAY_ADDRESS", None)
        options["num_cpus"] = cpus or os.cpu_count()
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"--address {address}" if address else "a local Ray instance"
        raise UserInputError(f"--executor ray: cannot connect to {where}: {str(exc).splitlines()[0]}") from None
    return ray


@dataclass(frozen=True)
class RayExecutor:
    """Tasks on a Ray cluster: `address` as `connect_ray` reads it; `workers` CPUs for a Ray
    instance started here when there is no address."""

    address: str | None = None
    workers: int | None = None
    name: str = "ray"

    def run(self, setup: Setup, work: Work, tasks: Sequence[Any], *, sizes: Sequence[int], desc: str,
            unit: str, resources: Resources = Resources(), progress: bool = True) -> RunSummary:
        ray = connect_ray(self.address, self.workers)
        summary = RunSummary(self.name)
        started = time.perf_counter()
        remote = ray.remote(_ray_task).options(num_cpus=resources.cpus, num_gpus=resources.gpus,
                                               max_retries=RAY_TASK_RETRIES, retry_exceptions=False)
        if resources.gpus and not ray.cluster_resources().get("GPU"):
            raise UserInputError("the Ray cluster has no GPU for this stage's GPU tasks; use --device cpu")
        # One copy of the setup in Ray's object store, and a key that tells a worker whether the
        # context it holds is this stage's.
        setup_key = hashlib.sha256(pickle.dumps(setup)).hexdigest()
        setup_ref = ray.put(setup)
        window = max(2, int(_TASKS_PER_CPU * ray.cluster_resources().get("CPU", 1) / max(resources.cpus, 1e-3)))
        queue = iter(tasks)
        in_flight: dict[Any, Any] = {}
        with tqdm(total=sum(sizes), desc=desc, unit=unit, disable=not progress) as bar:
            try:
                while True:
                    for task in queue:
                        in_flight[remote.remote(setup_key, setup_ref, work, task)] = task
                        if len(in_flight) >= window:
                            break
                    if not in_flight:
                        break
                    done, _ = ray.wait(list(in_flight), num_returns=1)
                    for ref in done:
                        del in_flight[ref]
                        items, node, seconds = _ray_result(ray, ref)
                        summary.add(node, items, seconds)
                        bar.update(items)
            except BaseException:
                for ref in in_flight:
                    ray.cancel(ref, force=False)
                raise
        summary.wall_s = time.perf_counter() - started
        summary.report(unit, progress)
        return summary


def _ray_result(ray, ref) -> tuple[int, str, float]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        # A user error raised by a task (a corrupt shard, a bad setting) reads as it would locally.
        if isinstance(cause, (UserInputError, OSError)):
            raise cause from None
        raise


# --------------------------------------------------------------------------------------------
# factory


def runs_in_process(executor: Executor) -> bool:
    """Whether `executor` runs every task in this process, so that a stage may hand its tasks
    objects that cannot travel (an index in memory, a trained searcher)."""
    return isinstance(executor, LocalExecutor) and executor.workers <= 1


def create_executor(name: str = "local", workers: int | None = 1, address: str | None = None) -> Executor:
    """An executor by name: ``local`` (`workers` processes) or ``ray`` (the cluster at `address`,
    or a local Ray instance of `workers` CPUs)."""
    if name == "local":
        if address:
            raise UserInputError("--address names a Ray cluster: use it with --executor ray")
        return LocalExecutor(max(1, workers or 1))
    if name == "ray":
        return RayExecutor(address, workers)
    raise UserInputError(f"unknown executor {name!r}; known: {', '.join(EXECUTORS)}")
