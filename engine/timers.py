"""The engine's timers: every job it runs, due at a time of the engine's Clock.

One table of jobs (recurring: the decision cycle, the monitor backstop, cleanup, the
UTC day; one-shot: a position's time exit, a pending decision's approval expiry), two
ways to drive it:

- SchedulerTimers, for a clock that runs by itself (the system clock, the simulated
  market at --speed N): APScheduler's AsyncIOScheduler fires the jobs on the event
  loop, each interval and date converted to wall time by the clock's rate, one
  instance of a job at a time, late runs coalesced.
- SteppedTimers, for a ManualClock (replay, tests): whoever drives it calls
  run_until(t); the clock jumps from one due job to the next and each job runs to
  completion before the next, so a replay decides, fills and exits exactly as the
  engine would live, as fast as the CPU allows.

APScheduler keeps time by the wall clock (datetime.now in its scheduler loop), which
is why it cannot drive a clock that jumps: the stepped driver does that, over the
same jobs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from engine.clock import Clock, ManualClock, wall_seconds

YIELD_EVERY = 64  # SteppedTimers.run_until lets the event loop in after this many jobs

log = logging.getLogger(__name__)

JobFn = Callable[[], Awaitable[object]]


class Timers:
    """The job table. `every` and `at` replace a job with the same id."""

    def every(self, job_id: str, interval: float, fn: JobFn, first: float | None = None, priority: int = 10) -> None:
        """Run fn every `interval` clock seconds, first at `first` (default now + interval).
        Among jobs due at the same moment, a lower priority runs first (exits before entries)."""
        raise NotImplementedError

    def at(self, job_id: str, when: float, fn: JobFn, priority: int = 10) -> None:
        """Run fn once at clock time `when` (at once if that is past)."""
        raise NotImplementedError

    def cancel(self, job_id: str) -> None:
        raise NotImplementedError

    def due(self, job_id: str) -> float | None:
        """When the job runs next (clock time), None if there is no such job."""
        raise NotImplementedError

    def ids(self) -> list[str]:
        raise NotImplementedError

    busy = 0  # jobs running now

    def start(self) -> None:
        """Begin firing jobs on their own (a no-op for a driven clock)."""

    def pause(self) -> None:
        """Start no more jobs; the running ones go on (stopping: they finish first)."""

    def stop(self) -> None:
        """Fire nothing more."""

    async def _run(self, job_id: str, fn: JobFn) -> None:
        self.busy += 1
        try:
            await fn()
        except Exception:  # noqa: BLE001 - a failing job must not stop the others
            log.exception("engine job %s failed", job_id)
        finally:
            self.busy -= 1


@dataclass
class _Job:
    fn: JobFn
    due: float
    interval: float | None
    order: tuple[int, int]  # (priority, registration): among jobs due together, the lowest runs first


class SteppedTimers(Timers):
    """Timers driven by hand over a ManualClock (replay, tests)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self._jobs: dict[str, _Job] = {}
        self._order = itertools.count()
        self.running = False  # start() only records that the engine asked for its jobs to run

    def every(self, job_id: str, interval: float, fn: JobFn, first: float | None = None, priority: int = 10) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        due = self.clock.now() + interval if first is None else first
        self._jobs[job_id] = _Job(fn, due, float(interval), self._order_of(job_id, priority))

    def at(self, job_id: str, when: float, fn: JobFn, priority: int = 10) -> None:
        self._jobs[job_id] = _Job(fn, when, None, self._order_of(job_id, priority))

    def _order_of(self, job_id: str, priority: int) -> tuple[int, int]:
        old = self._jobs.get(job_id)
        return (priority, old.order[1] if old is not None else next(self._order))

    def cancel(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def due(self, job_id: str) -> float | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.due

    def ids(self) -> list[str]:
        return list(self._jobs)

    def start(self) -> None:
        self.running = True

    def pause(self) -> None:
        self.running = False

    def stop(self) -> None:
        self.running = False

    def next_due(self) -> float | None:
        """The earliest due time of any job."""
        return min((j.due for j in self._jobs.values()), default=None)

    async def run_until(self, until: float) -> int:
        """Run every job due up to `until` in time order, moving the clock to each due
        time, then to `until`. A recurring job late by several intervals runs once
        (coalesced). Returns the number of jobs run."""
        ran = 0
        while True:
            job_id, job = self._earliest()
            if job is None or job.due > until:
                break
            now = self.clock.now()
            if job.due > now:
                self.clock.set(job.due)
                now = job.due
            if job.interval is None:
                del self._jobs[job_id]
            else:
                nxt = job.due + job.interval
                if nxt <= now:  # coalesce: never run a job twice for one moment
                    nxt += ((now - nxt) // job.interval + 1) * job.interval
                job.due = nxt
            await self._run(job_id, job.fn)
            ran += 1
            if ran % YIELD_EVERY == 0:
                # A replay runs every job inline, never suspending: let the loop in now and
                # then, or a Ctrl-C (asyncio cancels the main task) would wait for the end.
                await asyncio.sleep(0)
        if until > self.clock.now():
            self.clock.set(until)
        return ran

    async def run_due(self) -> int:
        """Run what is due now, without moving the clock."""
        return await self.run_until(self.clock.now())

    def _earliest(self) -> tuple[str, _Job | None]:
        best: tuple[str, _Job | None] = ("", None)
        for job_id, job in self._jobs.items():
            b = best[1]
            if b is None or (job.due, job.order) < (b.due, b.order):
                best = (job_id, job)
        return best


class SchedulerTimers(Timers):
    """Timers fired by APScheduler on the running event loop, for a clock with a rate."""

    def __init__(self, clock: Clock) -> None:
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        if clock.rate is None:
            raise ValueError("a manual clock is driven by hand: use SteppedTimers")
        self.clock = clock
        self._sched = AsyncIOScheduler(timezone=timezone.utc)

    def _wall(self, when: float) -> datetime:
        """The wall-clock moment at which the clock shows `when`."""
        delay = wall_seconds(self.clock, when - self.clock.now())
        return datetime.fromtimestamp(time.time() + delay, timezone.utc)  # wall clock: APScheduler's time

    def every(self, job_id: str, interval: float, fn: JobFn, first: float | None = None, priority: int = 10) -> None:
        first = self.clock.now() + interval if first is None else first
        self._sched.add_job(
            self._run, "interval", args=(job_id, fn), seconds=wall_seconds(self.clock, interval), id=job_id,
            next_run_time=self._wall(first), replace_existing=True, max_instances=1, coalesce=True,
            misfire_grace_time=None,
        )

    def at(self, job_id: str, when: float, fn: JobFn, priority: int = 10) -> None:
        self._sched.add_job(
            self._run, "date", args=(job_id, fn), run_date=self._wall(when), id=job_id, replace_existing=True,
            max_instances=1, misfire_grace_time=None,
        )

    def cancel(self, job_id: str) -> None:
        if self._sched.get_job(job_id) is not None:
            self._sched.remove_job(job_id)

    def due(self, job_id: str) -> float | None:
        job = self._sched.get_job(job_id)
        nxt = getattr(job, "next_run_time", None) if job is not None else None
        if nxt is None:
            return None
        rate = self.clock.rate or 1.0
        return self.clock.now() + (nxt.timestamp() - time.time()) * rate  # wall clock: APScheduler's time

    def ids(self) -> list[str]:
        return [j.id for j in self._sched.get_jobs()]

    def start(self) -> None:
        if not self._sched.running:
            self._sched.start()

    def pause(self) -> None:
        if self._sched.running:
            self._sched.pause()

    def stop(self) -> None:
        if self._sched.running:
            self._sched.shutdown(wait=False)


def timers_for(clock: Clock) -> Timers:
    """Stepped timers for a manual clock, APScheduler for a clock that runs by itself."""
    if clock.rate is None:
        assert isinstance(clock, ManualClock), f"{type(clock).__name__} has no rate but is not a ManualClock"
        return SteppedTimers(clock)
    return SchedulerTimers(clock)
