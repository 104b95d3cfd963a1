"""A GPU stream simulated on the host's side, for testing CUDA timing logic on the CPU.

It follows the rules the real device follows for one stream:

- the host pays ``launch_ms`` per kernel launch and goes on; the device runs what was queued
  in order, each kernel starting when the one before it has finished and not before it was
  queued;
- at most ``queue_depth`` launches may wait in the queue: a launch beyond that blocks the
  host until the device has started the oldest one (CUDA's launch queue);
- an event takes the time at which the device reaches it; ``query()`` says whether it has by
  the host's present time, ``synchronize()`` makes the host wait for it, and reading an
  elapsed time of an event the device has not reached fails (``cudaErrorNotReady``);
- ``sleep(cycles)`` is ``torch.cuda._sleep``: a kernel that keeps the device busy for that
  many cycles of its clock.

The host's time is virtual: ``now()`` gives it in seconds, as ``time.perf_counter`` would.
"""

from __future__ import annotations


class FakeGpu:
    def __init__(self, launch_ms: float = 0.005, queue_depth: int = 1024, cycles_per_ms: float = 1.98e6) -> None:
        self.launch_ms = launch_ms
        self.queue_depth = queue_depth
        self.cycles_per_ms = cycles_per_ms
        self.host = 0.0  # the host's time, ms
        self.idle_at = 0.0  # when the device will have run everything queued so far, ms
        self.starts: list[float] = []  # when each queued item starts on the device
        self.launches = 0

    def now(self) -> float:
        return self.host / 1e3

    def _queue(self, device_ms: float) -> float:
        waiting = sorted(start for start in self.starts if start > self.host)
        if len(waiting) >= self.queue_depth:  # the queue is full: the host blocks
            self.host = waiting[len(waiting) - self.queue_depth]
        self.starts = [start for start in self.starts if start > self.host]
        start = max(self.host, self.idle_at)
        self.starts.append(start)
        self.idle_at = start + device_ms
        return self.idle_at

    def launch(self, device_ms: float) -> None:
        """A kernel that needs ``device_ms`` of the device."""
        self.host += self.launch_ms
        self.launches += 1
        self._queue(device_ms)

    def sleep(self, cycles: int) -> None:
        self.launch(cycles / self.cycles_per_ms)

    def host_work(self, ms: float) -> None:
        """Python on the host that launches nothing."""
        self.host += ms

    def event_class(self, enable_timing: bool = True) -> object:
        gpu = self

        class Event:
            time: float | None = None

            def record(self) -> None:
                self.time = gpu._queue(0.0)

            def query(self) -> bool:
                return self.time is not None and self.time <= gpu.host

            def synchronize(self) -> None:
                gpu.host = max(gpu.host, self.time)

            def elapsed_time(self, end: Event) -> float:
                if not (self.query() and end.query()):
                    raise RuntimeError("cudaErrorNotReady")
                return end.time - self.time

        return Event()
