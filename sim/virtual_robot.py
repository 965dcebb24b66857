"""The virtual robot's motor firmware: a physics backend behind arming, damping and a watchdog.

Protocol front ends (``virtual_robot_board`` for the framed serial/ZMQ
protocol, ``virtual_robot_dynamixel`` for the claw's Dynamixel chain) turn
packets into calls on ``VirtualRobot``; ``virtual_robot_server`` moves bytes
between them and a pseudo-terminal or a socket.

Time: in real-time mode the simulation catches up with the wall clock
whenever the robot is touched; in lockstep mode it advances exactly one
control period per position command, so a test sees the same trajectory on
every run. The watchdog always runs on the wall clock: like real firmware,
it protects against a host that has gone silent.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable

import numpy as np

from firmware_bridge.motor_messages import BoardMode
from firmware_bridge.spec import RobotSpec
from firmware_bridge.state import RobotState
from sim.backend import Backend
from sim.randomization import DynamicsParams, corrupt_state


@dataclasses.dataclass
class DeviceCounters:
    commands: int = 0
    rejected_commands: int = 0  # commands while not armed, or for the wrong number of motors
    watchdog_trips: int = 0


class VirtualRobot:
    """One simulated robot. Joint arrays follow the spec's joint order."""

    def __init__(
        self,
        spec: RobotSpec,
        backend: Backend,
        params: DynamicsParams,
        *,
        rng: np.random.Generator | None = None,
        watchdog_s: float = 0.1,
        imu_timeout_s: float = 0.01,
        sensor_drops: Iterable[tuple[float, str]] = (),
        lockstep: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``sensor_drops``: fault drills, ``(board seconds, sensor)``: each sensor freezes
        (``Backend.drop_sensor``) once the board's clock reaches its time."""
        if watchdog_s < 0:
            raise ValueError(f"watchdog_s: must be >= 0 (0 switches it off), got {watchdog_s}")
        if imu_timeout_s <= 0:
            raise ValueError(f"imu_timeout_s: must be positive, got {imu_timeout_s}")
        self.spec = spec
        self.backend = backend
        self.watchdog_s = watchdog_s
        self.imu_timeout_s = imu_timeout_s
        self._sensor_drops = sorted((float(at), sensor) for at, sensor in sensor_drops)
        for _, sensor in self._sensor_drops:
            backend.check_sensor(sensor)
        self.lockstep = lockstep
        self.clock = clock
        self.counters = DeviceCounters()
        self._params = params
        self._rng = rng or np.random.default_rng(0)
        self._state = backend.reset(params)
        self._targets = self._state.joint_pos.copy()
        self._start = clock()
        self._last_command = self._start
        self.mode = BoardMode.DISARMED
        self.watchdog_latched = False
        self.motor_faults = np.zeros(spec.num_joints, dtype=np.uint8)
        """Per-joint ``MotorStatus`` fault bits the drivers report (set by fault drills and tests)."""
        backend.set_safe_state("torque_off")

    @property
    def imu_stale(self) -> bool:
        """Whether the board's IMU has delivered no new sample for ``imu_timeout_s`` of simulated time: a
        dropped IMU (``backend.drop_sensor("imu")``, a fault drill) stops its samples, as a hung IMU stops the
        sample counter a board watches, so its frozen reading is flagged rather than passed on as news."""
        dropped = self.backend.sensor_dropped_at("imu")
        return dropped is not None and self.backend.time - dropped >= self.imu_timeout_s

    @property
    def board_time_us(self) -> int:
        """Microseconds on the board's clock: simulated time, so lockstep runs report lockstep time."""
        return int(round(self.backend.time * 1e6))

    def arm(self) -> None:
        """Enable PD control holding the present pose; clears a latched watchdog."""
        now = self.clock()
        self.poll(now)
        self._targets = self._state.joint_pos.copy()
        self.backend.set_gains(self.spec.kp, self.spec.kd)
        self.backend.set_safe_state(None)
        self.mode = BoardMode.ARMED
        self.watchdog_latched = False
        self._last_command = now

    def disarm(self, torque_off: bool) -> None:
        self.poll()
        self._go_safe(torque_off)

    def _go_safe(self, torque_off: bool) -> None:
        if torque_off:
            self.backend.set_safe_state("torque_off")
            self.mode = BoardMode.DISARMED
        else:
            self.backend.set_safe_state("damping", self.spec.safe_state.kd)
            self.mode = BoardMode.DAMPING

    def command(self, targets: np.ndarray, kp: np.ndarray | None = None, kd: np.ndarray | None = None) -> bool:
        """Apply joint targets (and gains) if armed; feeds the watchdog. Returns whether it was applied."""
        # One clock reading for the watchdog's check and its feed: with a second one, a process stalled between
        # the two (a SIGSTOP, a long page fault) would feed the watchdog after the stall without checking it.
        now = self.clock()
        self.poll(now)
        if self.mode is not BoardMode.ARMED:
            self.counters.rejected_commands += 1
            return False
        self.counters.commands += 1
        self._last_command = now
        self._targets = np.clip(np.asarray(targets, dtype=np.float64), self.spec.lower, self.spec.upper)
        if kp is not None and kd is not None:
            self.backend.set_gains(kp, kd)
        if self.lockstep:
            self._state = self.backend.step(self._targets, self.spec.control_period)
        return True

    def feed_watchdog(self) -> None:
        """Count an instruction that carries no command as news from the host (a Dynamixel's bus watchdog counts
        every packet); checked first, with the same clock reading, as ``command`` does."""
        now = self.clock()
        self.poll(now)
        if self.mode is BoardMode.ARMED:
            self._last_command = now

    def state(self) -> RobotState:
        """What the sensors report: the physics state with the dynamics' sensor noise and bias."""
        self.poll()
        return corrupt_state(self._state, self._params, self._rng)

    def poll(self, now: float | None = None) -> None:
        """Check the watchdog and, in real-time mode, bring the simulation up to the wall clock (or ``now``, a
        reading the caller has just taken)."""
        if now is None:
            now = self.clock()
        if not self.lockstep:
            lag = (now - self._start) - self.backend.time
            if lag >= self.backend.physics_dt:
                self._state = self.backend.step(self._targets, lag)
        while self._sensor_drops and self.backend.time >= self._sensor_drops[0][0]:
            self.backend.drop_sensor(self._sensor_drops.pop(0)[1])
        if (
            self.watchdog_s > 0
            and self.mode is BoardMode.ARMED
            and now - self._last_command > self.watchdog_s
        ):
            self.counters.watchdog_trips += 1
            self.watchdog_latched = True
            self._go_safe(torque_off=self.spec.safe_state.mode == "torque_off")

    def next_deadline(self) -> float:
        """Wall-clock time by which ``poll`` should run again (the watchdog, physics catching up)."""
        deadline = self.clock() + self.spec.control_period
        if self.watchdog_s > 0 and self.mode is BoardMode.ARMED:
            deadline = min(deadline, self._last_command + self.watchdog_s)
        return deadline
