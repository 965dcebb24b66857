"""Sample messages shared by the protocol tests; their bytes are worked out in test_motor_messages.py."""

import numpy as np

from firmware_bridge.motor_messages import BoardMode, Command, CommandFlags, FaultFlags, State

COMMAND = Command(
    position=np.array([0.5, -1.25]),
    kp=np.array([20.0, 0.0]),
    kd=np.array([0.5, 0.0]),
    torque=np.array([0.0, -1.5]),
    flags=CommandFlags.ARM,
)
STATE = State(
    board_time_us=123456789,
    last_command_seq=0x0102,
    mode=BoardMode.ARMED,
    faults=FaultFlags.WATCHDOG | FaultFlags.MOTOR_FAULT,
    position=np.array([0.5, -1.25]),
    velocity=np.array([2.0, -0.004]),
    current=np.array([1.5, 0.0]),
    status=np.array([0x01, 0x11], dtype=np.uint8),
    orientation=np.array([0.01, -0.02, 3.0]),
    gyro=np.array([0.1, 0.0, -0.1]),
)
