"""Optional real-time settings for the loop's process: CPU affinity, SCHED_FIFO, locked memory, a frozen
garbage collector.

All off by default. Each one asked for is applied if the OS allows it and
reported either way (``applied`` / ``refused`` with the OS's reason), so a
run never silently lacks a setting it was asked for. ``restore`` undoes them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
from dataclasses import dataclass, field


_MCL_CURRENT, _MCL_FUTURE = 1, 2  # <sys/mman.h> on Linux


@dataclass
class RealtimeSettings:
    cpu: int | None = None
    """Pin the process to this CPU."""
    fifo_priority: int | None = None
    """SCHED_FIFO with this priority (1-99); needs CAP_SYS_NICE or an rtprio limit."""
    gc_freeze: bool = False
    """Collect once, move everything alive to the permanent generation and switch automatic collection off
    while the loop runs, so no collector pause lands in a tick."""
    lock_memory: bool = False
    """``mlockall``: keep every page of the process in RAM, so no page fault (a disk read) lands in a tick."""
    switch_interval_s: float | None = None
    """``sys.setswitchinterval``: how long another Python thread (the log writer) may hold the interpreter
    before the loop's thread gets it back; the default is 5 ms."""
    applied: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    _undo: list = field(default_factory=list, repr=False)

    def apply(self) -> None:
        if self.cpu is not None:
            self._try(f"cpu affinity {{{self.cpu}}}", self._affinity)
        if self.fifo_priority is not None:
            self._try(f"SCHED_FIFO priority {self.fifo_priority}", self._fifo)
        if self.lock_memory:
            self._try("memory locked (mlockall)", self._mlockall)
        if self.switch_interval_s is not None:
            previous = sys.getswitchinterval()
            sys.setswitchinterval(self.switch_interval_s)
            self._undo.append(lambda: sys.setswitchinterval(previous))
            self.applied.append(f"switch interval {self.switch_interval_s * 1e6:.0f} us")
        if self.gc_freeze:
            gc.collect()
            gc.freeze()
            was_enabled = gc.isenabled()
            gc.disable()
            self._undo.append(lambda: gc.enable() if was_enabled else None)
            self._undo.append(gc.unfreeze)
            self.applied.append("gc frozen and disabled")

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    def report(self) -> dict[str, list[str]]:
        return {"applied": list(self.applied), "refused": list(self.refused)}

    def _try(self, what: str, action) -> None:
        try:
            action()
        except (OSError, AttributeError, ValueError) as exc:
            self.refused.append(f"{what}: {exc}")
        else:
            self.applied.append(what)

    def _affinity(self) -> None:
        previous = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {self.cpu})
        self._undo.append(lambda: os.sched_setaffinity(0, previous))

    def _mlockall(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno))
        self._undo.append(libc.munlockall)

    def _fifo(self) -> None:
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(self.fifo_priority))
        self._undo.append(lambda: os.sched_setscheduler(0, policy, param))
