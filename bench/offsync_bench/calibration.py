"""How fast this machine is while a run measures: small probes taken before the stack starts
and after it stops, recorded in bench-results.json (``calibration``).

The machine is shared: the same commit has measured 1.6 and 10 CPU s/min at rest on different
nights, and every figure moved with it. Runs on different days compare only when their probes
agree; within one run, a ``before`` far from ``after`` says the machine changed under it.
The probes are what our figures are made of: interpreter work, reads scattered over memory
that does not fit in the caches, and the hand-off of a message to another process and back
(each hop of the change path is one), on one CPU and across two."""

from __future__ import annotations

import os
import random
import socket
import statistics
import time
from typing import Any

LOOP_ITERATIONS = 2_000_000
MEMORY_BYTES = 128 * 2**20  # well past any L3 cache here
MEMORY_READS = 500_000
HANDOFFS = 2_000


def _interpreter_ms() -> float:
    """One CPU-bound interpreter loop (best of three: the machine's speed, not its neighbours)."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        s = 0
        for i in range(LOOP_ITERATIONS):
            s += i
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def _memory_ns() -> float:
    """Nanoseconds per read at random places of a buffer far larger than the caches, less the
    same loop over one place (the interpreter's share)."""
    buf = bytearray(MEMORY_BYTES)
    rng = random.Random(7)
    scattered = [rng.randrange(MEMORY_BYTES) for _ in range(MEMORY_READS)]
    same = [0] * MEMORY_READS

    def walk(places: list[int]) -> float:
        t = time.perf_counter()
        s = 0
        for i in places:
            s += buf[i]
        return time.perf_counter() - t

    walk(scattered)  # fault the pages in first
    spread = min(walk(scattered) for _ in range(2))
    base = min(walk(same) for _ in range(2))
    return max(0.0, spread - base) / MEMORY_READS * 1e9


def _handoff(cpus: tuple[int, int] | None) -> tuple[float, float, float]:
    """Round trips of one byte to a child process over a socket pair, both pinned to the given
    CPUs (None: where the scheduler puts them, usually together): p50 and p99 of the round trip
    and the parent's CPU per round trip, in µs."""
    parent, child = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child echoes until the parent closes its end
        parent.close()
        try:
            if cpus is not None:
                os.sched_setaffinity(0, {cpus[1]})
            while data := child.recv(1):
                child.send(data)
        finally:
            os._exit(0)
    child.close()
    allowed = os.sched_getaffinity(0)
    rtts = []
    try:
        if cpus is not None:
            os.sched_setaffinity(0, {cpus[0]})
        cpu0 = time.process_time()
        for _ in range(HANDOFFS):
            t = time.perf_counter()
            parent.send(b"x")
            parent.recv(1)
            rtts.append(time.perf_counter() - t)
        cpu = time.process_time() - cpu0
    finally:
        os.sched_setaffinity(0, allowed)
        parent.close()
        os.waitpid(pid, 0)
    rtts.sort()
    return statistics.median(rtts) * 1e6, rtts[int(len(rtts) * 0.99)] * 1e6, cpu / HANDOFFS * 1e6


def _handoffs() -> dict[str, float]:
    """The hand-off, as the scheduler places it and, with two CPUs or more, from one CPU to
    another: waking a process on an idle CPU is what costs most on a virtual machine (an
    interrupt to another virtual CPU), and the stack's processes do it at every hop."""
    out: dict[str, float] = {}
    p50, p99, cpu = _handoff(None)
    out |= {"handoff_p50_us": round(p50, 1), "handoff_p99_us": round(p99, 1), "handoff_cpu_us": round(cpu, 1)}
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2:
        p50, p99, cpu = _handoff((cpus[0], cpus[1]))
        out |= {
            "cross_cpu_handoff_p50_us": round(p50, 1),
            "cross_cpu_handoff_p99_us": round(p99, 1),
            "cross_cpu_handoff_cpu_us": round(cpu, 1),
        }
    return out


def probe() -> dict[str, Any]:
    """The probes and the load average at the time (~1-2 s)."""
    return {
        "interpreter_ms": round(_interpreter_ms(), 1),
        "memory_read_ns": round(_memory_ns(), 1),
        **_handoffs(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
