"""Open the transport a robot spec asks for and hand it to the matching ``MotorBus``.

The only place that opens ports and sockets: device classes receive them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import serial
import zmq

from firmware_bridge.board_bus import BoardBus, SerialLink, ZmqLink
from firmware_bridge.calibration import Calibration
from firmware_bridge.dynamixel_bus import DynamixelBus, DynamixelPort
from firmware_bridge.motor_bus import BusError, MotorBus
from firmware_bridge.spec import RobotSpec


WRITE_TIMEOUT_S = 0.5
"""How long a serial write may block before it fails as a bus error: a port that stops draining (a hung adapter,
a stalled peer) must not hold the loop, and the safe stop, forever. Far above the bus timeout: pyserial counts
the time from the write's start, so a bound near a tick would turn a scheduling stall into a spurious stop."""


@contextlib.contextmanager
def open_bus(
    spec: RobotSpec,
    *,
    port: str | None = None,
    zmq_address: str | None = None,
    baud: int | None = None,
    timeout_s: float = 0.02,
    calibration: Calibration | None = None,
) -> Iterator[MotorBus]:
    """``with open_bus(spec, port=...) as bus:``; exactly one of ``port`` and ``zmq_address``."""
    if (port is None) == (zmq_address is None):
        raise ValueError("open_bus: give exactly one of port and zmq_address")
    baud = baud or spec.bus.baud
    if zmq_address is not None:
        if spec.bus.kind == "dynamixel":
            raise BusError(f"robot {spec.name}: a Dynamixel bus is reached over a serial port, not ZMQ")
        context = zmq.Context.instance()
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(zmq_address)
        try:
            yield BoardBus(spec, ZmqLink(sock), timeout_s=timeout_s, calibration=calibration)
        finally:
            sock.close()
        return
    if spec.bus.kind == "dynamixel":
        handler = DynamixelPort(port, timeout_s)
        try:
            opened = handler.openPort() and handler.setBaudRate(baud)
        except serial.SerialException as exc:
            raise BusError(f"{port}: cannot open serial port: {exc}") from None
        if not opened:
            raise BusError(f"{port}: the Dynamixel SDK refused baud rate {baud}")
        handler.ser.write_timeout = WRITE_TIMEOUT_S
        try:
            yield DynamixelBus(spec, handler, calibration=calibration)
        finally:
            handler.closePort()
        return
    try:
        ser = serial.Serial(port, baudrate=baud, timeout=0, write_timeout=WRITE_TIMEOUT_S)
    except serial.SerialException as exc:
        raise BusError(f"{port}: cannot open serial port: {exc}") from None
    try:
        yield BoardBus(spec, SerialLink(ser), timeout_s=timeout_s, calibration=calibration)
    finally:
        ser.close()
