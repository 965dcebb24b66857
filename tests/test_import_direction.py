"""firmware_bridge must install and run on a robot computer: no torch, no physics engine, no sim."""

import subprocess
import sys

import pytest

FORBIDDEN = ("torch", "mujoco", "pybullet", "gymnasium", "sim", "robot_sac")


@pytest.mark.parametrize("module", ["firmware_bridge", "firmware_bridge.cli"])
def test_firmware_bridge_imports_no_training_or_physics_stack(module):
    code = (
        "import sys, pkgutil, importlib, " + module.split(".")[0] + "\n"
        f"import {module}\n"
        "import firmware_bridge\n"
        "for m in pkgutil.walk_packages(firmware_bridge.__path__, 'firmware_bridge.'):\n"
        "    importlib.import_module(m.name)\n"
        f"print(','.join(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing firmware_bridge pulled in: {out.stdout.strip()}"
