"""The quadruped's motor board, device side: answers every host message of docs/protocol.md with one reply.

Like real board firmware it answers from its latest sensor sample, already
encoded (``sample``), so a reply costs microseconds whatever the physics
costs. In real-time mode a plain COMMAND takes effect after its reply has
gone (``finish``: physics catches up to now under the old targets, then the
new ones apply), the way a board's control loop picks up a new target at its
next cycle. In lockstep mode a COMMAND steps the physics one control period
before the reply, so the reply carries the state that step produced.
"""

from __future__ import annotations

import numpy as np

from firmware_bridge.motor_messages import (
    Arm,
    BoardMode,
    Command,
    CommandFlags,
    Disarm,
    DisarmMode,
    FaultFlags,
    Heartbeat,
    Info,
    InfoRequest,
    Message,
    MotorStatus,
    StateWriter,
    encode_body,
)
from sim.virtual_robot import VirtualRobot

FIRMWARE_VERSION = (1, 1, 0)  # 1.1: the IMU_STALE fault bit
MOTOR_MODEL = 0x0001  # the board's only motor driver type
_WATCHDOG, _BAD_COMMAND, _MOTOR_FAULT, _IMU_STALE = (int(f) for f in (
    FaultFlags.WATCHDOG, FaultFlags.BAD_COMMAND, FaultFlags.MOTOR_FAULT, FaultFlags.IMU_STALE))  # fmt: skip


class BoardDevice:
    """Motor board logic: wire slot k is the motor with the k-th smallest id, as the host bus assumes."""

    def __init__(self, robot: VirtualRobot) -> None:
        self.robot = robot
        ids = robot.spec.motor_ids
        self.slot_ids = sorted(ids)
        self._joint_of_slot = np.array([ids.index(i) for i in self.slot_ids])
        self._bad_command = False
        self._writer = StateWriter(len(self.slot_ids))
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.sample()

    def sample(self) -> None:
        """Take and encode a sensor sample (``robot.state`` brings the physics up to now first)."""
        robot = self.robot
        state = robot.state()
        j = self._joint_of_slot
        enabled = np.uint8(MotorStatus.ENABLED if robot.mode is BoardMode.ARMED else 0)
        # One read of the motors' faults (a test or a perturbation may set them from another thread): the reply's
        # MOTOR_FAULT flag and the statuses it carries come from the same sample, as on a board.
        motor_faults = robot.motor_faults.copy()
        self._motor_fault = bool(motor_faults.any())
        self._writer.fill(robot.board_time_us, state.joint_pos[j], state.joint_vel[j], state.joint_current[j],
                          motor_faults[j] | enabled, state.imu[:3], state.imu[3:6])  # fmt: skip

    def handle(self, seq: int, msg: Message, reply_seq: int) -> bytes:
        """The reply body to one decoded host message."""
        robot = self.robot
        if self._pending is not None:  # two commands in one read: the first takes effect first
            self.finish()
        if isinstance(msg, Command):
            self._bad_command = msg.position.size != len(self.slot_ids)
            if self._bad_command:
                robot.counters.rejected_commands += 1
                return self._reply(reply_seq, seq)
            targets, kp, kd = (np.empty(len(self.slot_ids)) for _ in range(3))
            targets[self._joint_of_slot] = msg.position
            kp[self._joint_of_slot] = msg.kp
            kd[self._joint_of_slot] = msg.kd
            if not msg.flags and not robot.lockstep:
                self._pending = (targets, kp, kd)
                return self._reply(reply_seq, seq)
            if CommandFlags.DAMP in msg.flags:
                robot.disarm(torque_off=False)
            else:
                if CommandFlags.ARM in msg.flags:
                    robot.arm()
                robot.command(targets, kp, kd)
        elif isinstance(msg, Arm):
            robot.arm()
        elif isinstance(msg, Disarm):
            robot.disarm(torque_off=msg.mode is DisarmMode.TORQUE_OFF)
        elif isinstance(msg, InfoRequest):
            info = Info(FIRMWARE_VERSION, tuple(self.slot_ids), (MOTOR_MODEL,) * len(self.slot_ids))
            return encode_body(info, reply_seq)
        elif isinstance(msg, Heartbeat):
            return self._reply(reply_seq, seq)
        # Anything that changed the mode, or stepped the physics in lockstep, shows in the reply itself.
        self.sample()
        return self._reply(reply_seq, seq)

    def finish(self) -> None:
        """Apply a COMMAND whose reply has gone, then take a fresh sample."""
        if self._pending is not None:
            targets, kp, kd = self._pending
            self._pending = None
            self.robot.command(targets, kp, kd)
        self.sample()

    def _reply(self, reply_seq: int, seq: int) -> bytes:
        robot = self.robot
        # Plain ints: enum flag arithmetic would cost microseconds on every reply.
        faults = 0
        if robot.watchdog_latched:
            faults |= _WATCHDOG
        if self._bad_command:
            faults |= _BAD_COMMAND
        if self._motor_fault:
            faults |= _MOTOR_FAULT
        if robot.imu_stale:
            faults |= _IMU_STALE
        return self._writer.body(reply_seq, seq, int(robot.mode), faults)

