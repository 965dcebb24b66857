"""The quadruped's motor board, device side: answers every host message of docs/protocol.md with one reply."""

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
    Info,
    InfoRequest,
    Message,
    MotorStatus,
    State,
)
from sim.virtual_robot import VirtualRobot

FIRMWARE_VERSION = (1, 0, 0)
MOTOR_MODEL = 0x0001  # the board's only motor driver type


class BoardDevice:
    """Motor board logic: wire slot k is the motor with the k-th smallest id, as the host bus assumes."""

    def __init__(self, robot: VirtualRobot) -> None:
        self.robot = robot
        ids = robot.spec.motor_ids
        self.slot_ids = sorted(ids)
        self._joint_of_slot = np.array([ids.index(i) for i in self.slot_ids])
        self._bad_command = False

    def handle(self, seq: int, msg: Message) -> Message:
        """The reply to one decoded host message."""
        robot = self.robot
        if isinstance(msg, Command):
            self._bad_command = msg.position.size != len(self.slot_ids)
            if self._bad_command:
                robot.counters.rejected_commands += 1
            elif CommandFlags.DAMP in msg.flags:
                robot.disarm(torque_off=False)
            else:
                if CommandFlags.ARM in msg.flags:
                    robot.arm()
                targets, kp, kd = (np.empty(len(self.slot_ids)) for _ in range(3))
                targets[self._joint_of_slot] = msg.position
                kp[self._joint_of_slot] = msg.kp
                kd[self._joint_of_slot] = msg.kd
                robot.command(targets, kp, kd)
        elif isinstance(msg, Arm):
            robot.arm()
        elif isinstance(msg, Disarm):
            robot.disarm(torque_off=msg.mode is DisarmMode.TORQUE_OFF)
        elif isinstance(msg, InfoRequest):
            return Info(FIRMWARE_VERSION, tuple(self.slot_ids), (MOTOR_MODEL,) * len(self.slot_ids))
        return self._state_reply(seq)

    def _state_reply(self, seq: int) -> State:
        robot = self.robot
        state = robot.state()
        faults = FaultFlags(0)
        if robot.watchdog_latched:
            faults |= FaultFlags.WATCHDOG
        if self._bad_command:
            faults |= FaultFlags.BAD_COMMAND
        enabled = MotorStatus.ENABLED if robot.mode is BoardMode.ARMED else MotorStatus(0)
        j = self._joint_of_slot
        if robot.motor_faults.any():
            faults |= FaultFlags.MOTOR_FAULT
        return State(
            board_time_us=robot.board_time_us,
            last_command_seq=seq,
            mode=robot.mode,
            faults=faults,
            position=state.joint_pos[j],
            velocity=state.joint_vel[j],
            current=state.joint_current[j],
            status=robot.motor_faults[j] | np.uint8(enabled),
            orientation=state.imu[:3],
            gyro=state.imu[3:6],
        )
