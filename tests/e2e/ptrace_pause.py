#!/usr/bin/env python3
"""ptrace_pause.py PID TIMES STOP_MS RUN_MS: attaches to every thread of PID
with PTRACE_SEIZE, stops each with PTRACE_INTERRUPT, keeps them stopped for
about STOP_MS, detaches, lets them run for about RUN_MS; TIMES times. What a
debugger or a profiler does to the daemon. Exits 0, or 1 with the reason."""
import ctypes
import os
import random
import sys
import time

PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
WALL = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long


def ptrace(request, tid, data=0):
    if libc.ptrace(request, tid, None, ctypes.c_void_p(data)) != 0:
        return ctypes.get_errno()
    return 0


def threads(pid):
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except FileNotFoundError:
        return []


def main():
    pid, times, stop_ms, run_ms = (int(a) for a in sys.argv[1:5])
    for _ in range(times):
        seized = []
        for tid in threads(pid):
            if ptrace(PTRACE_SEIZE, tid) == 0:
                seized.append(tid)
        if not seized:
            print(f"could not attach to any thread of {pid}", file=sys.stderr)
            return 1
        for tid in seized:
            ptrace(PTRACE_INTERRUPT, tid)
        deliver = {}
        for tid in seized:
            try:
                _, status = os.waitpid(tid, WALL)
            except ChildProcessError:
                continue
            # A signal-delivery stop (no event in the high bits) is the
            # thread's own signal: passed on at the detach, not eaten.
            if os.WIFSTOPPED(status) and (status >> 16) == 0:
                deliver[tid] = os.WSTOPSIG(status)
        time.sleep(random.uniform(stop_ms / 2, stop_ms * 1.5) / 1000)
        for tid in seized:
            ptrace(PTRACE_DETACH, tid, deliver.get(tid, 0))
        time.sleep(random.uniform(run_ms / 2, run_ms * 1.5) / 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
