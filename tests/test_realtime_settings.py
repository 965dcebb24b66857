"""Real-time settings are applied where the OS allows, reported either way, and undone by ``restore``."""

import gc
import os
import sys

import pytest

from firmware_bridge.realtime import RealtimeSettings


def test_nothing_is_touched_by_default():
    settings = RealtimeSettings()
    settings.apply()
    assert settings.report() == {"applied": [], "refused": []}
    settings.restore()


def test_affinity_gc_and_switch_interval_are_applied_and_restored():
    cpus = os.sched_getaffinity(0)
    interval = sys.getswitchinterval()
    settings = RealtimeSettings(cpu=min(cpus), gc_freeze=True, switch_interval_s=2e-4)
    settings.apply()
    try:
        assert os.sched_getaffinity(0) == {min(cpus)}
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        assert sys.getswitchinterval() == pytest.approx(2e-4)
        assert len(settings.report()["applied"]) == 3 and settings.report()["refused"] == []
    finally:
        settings.restore()
    assert os.sched_getaffinity(0) == cpus
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == interval


def _locked_kb() -> int:
    line = next(line for line in open("/proc/self/status") if line.startswith("VmLck:"))
    return int(line.split()[1])


def test_memory_locking_is_applied_and_undone_or_refused_with_the_reason():
    settings = RealtimeSettings(lock_memory=True)
    settings.apply()
    locked = _locked_kb()
    settings.restore()
    report = settings.report()
    if report["applied"]:
        assert report["applied"] == ["memory locked (mlockall)"] and locked > 1000 and _locked_kb() == 0
    else:  # e.g. RLIMIT_MEMLOCK too small for an unprivileged user
        assert report["refused"][0].startswith("memory locked (mlockall): ") and locked == 0


def test_a_setting_the_os_refuses_is_reported_not_raised():
    settings = RealtimeSettings(cpu=10_000)
    settings.apply()
    settings.restore()
    report = settings.report()
    assert report["applied"] == [] and report["refused"][0].startswith("cpu affinity {10000}:")
