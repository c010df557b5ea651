"""Where a campaign's attempts execute (registry `engines`).

An engine implements one method, `map(job, units)`: run `job` on every unit and yield the results as
they finish, in any order. The campaign driver stores each result as it arrives, so an engine never
touches the database.

    thread    a thread pool in this process (default; the target's own concurrency limit still applies)
    process   a pool of worker processes (spawned); each builds its own target and scorers
    ray       tasks on a Ray cluster (`address`), or a local one started on the spot; `pip install ray`
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from bastion.core.errors import DependencyMissing
from bastion.core.registry import Registry

U = TypeVar("U")
R = TypeVar("R")


class EngineOptions(BaseModel):
    """How many attempts run at once."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(4, ge=1, description="Attempts in flight at once.")


class Engine:
    """Runs jobs over units and yields results as they complete."""

    Options: ClassVar[type[BaseModel]] = EngineOptions
    plugin_name: ClassVar[str]
    in_process: ClassVar[bool] = True
    """True when jobs run in this process (they may share this process's objects)."""

    def __init__(self, options: BaseModel) -> None:
        self.options = options

    def map(self, job: Callable[[U], R], units: Iterable[U]) -> Iterator[R]:
        """Yield `job(unit)` for every unit, in completion order."""
        raise NotImplementedError

    def close(self) -> None:
        """Release workers."""


engines: Registry[Engine] = Registry("campaign engine")


def _windowed(submit: Callable[[U], cf.Future[R]], units: Iterable[U], window: int) -> Iterator[R]:
    pending: set[cf.Future[R]] = set()
    iterator = iter(units)
    exhausted = False
    while True:
        while not exhausted and len(pending) < window:
            try:
                pending.add(submit(next(iterator)))
            except StopIteration:
                exhausted = True
        if not pending:
            return
        done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
        for future in done:
            yield future.result()


@engines.register("thread")
class ThreadEngine(Engine):
    """A thread pool in this process."""

    def map(self, job: Callable[[U], R], units: Iterable[U]) -> Iterator[R]:
        """Threads run the jobs; at most `2 × workers` are queued at once."""
        workers = EngineOptions.model_validate(self.options.model_dump()).workers
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="redteam") as pool:
            yield from _windowed(lambda u: pool.submit(job, u), units, workers * 2)


@engines.register("process")
class ProcessEngine(Engine):
    """A pool of spawned worker processes."""

    in_process = False

    def map(self, job: Callable[[U], R], units: Iterable[U]) -> Iterator[R]:
        """Worker processes run the jobs (`job` and units must pickle)."""
        workers = EngineOptions.model_validate(self.options.model_dump()).workers
        context = multiprocessing.get_context("spawn")
        with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
            yield from _windowed(lambda u: pool.submit(job, u), units, workers * 2)


class RayOptions(EngineOptions):
    """Where the Ray cluster is."""

    address: str | None = Field(
        None, description="Ray cluster address ('auto', 'ray://…'); None: start a local one."
    )
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster (None: all).")


@engines.register("ray")
class RayEngine(Engine):
    """Ray tasks on a cluster (or a local one): attempts spread over its workers."""

    Options = RayOptions
    in_process = False

    def __init__(self, options: BaseModel) -> None:
        super().__init__(options)
        try:
            import ray
        except ImportError as exc:
            raise DependencyMissing("the ray engine needs Ray: pip install 'bastion[ray]'") from exc
        self.ray = ray
        self.opts = RayOptions.model_validate(options.model_dump())
        self._started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.opts.address:
                kwargs["address"] = self.opts.address
            elif self.opts.num_cpus:
                kwargs["num_cpus"] = self.opts.num_cpus
            ray.init(**kwargs)
            self._started = True

    def map(self, job: Callable[[U], R], units: Iterable[U]) -> Iterator[R]:
        """Each unit is a Ray task; at most `2 × workers` are in flight."""
        ray = self.ray
        remote = ray.remote(job)
        window = self.opts.workers * 2
        pending: list[Any] = []
        iterator = iter(units)
        exhausted = False
        while True:
            while not exhausted and len(pending) < window:
                try:
                    pending.append(remote.remote(next(iterator)))
                except StopIteration:
                    exhausted = True
            if not pending:
                return
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                yield ray.get(ref)

    def close(self) -> None:
        """Shut down a cluster this engine started."""
        if self._started:
            self.ray.shutdown()
