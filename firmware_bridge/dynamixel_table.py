"""The Dynamixel XM430 control table and its units, as data (ROBOTIS e-Manual, XM430-W350).

Registers are named by ``XM430`` members, never by free strings; each holds
its address, size, default, memory area and access. ``UNITS`` says how raw
register values map to SI units, so conversions are a lookup, not arithmetic
scattered through the bus code.
"""

from __future__ import annotations

import dataclasses
import enum
import math


class Area(enum.Enum):
    EEPROM = "eeprom"  # writable only with torque off
    RAM = "ram"


@dataclasses.dataclass(frozen=True)
class Register:
    address: int
    size: int
    default: int
    area: Area
    writable: bool
    signed: bool = False


class XM430(enum.Enum):
    MODEL_NUMBER = Register(0, 2, 1020, Area.EEPROM, False)
    FIRMWARE_VERSION = Register(6, 1, 48, Area.EEPROM, False)
    ID = Register(7, 1, 1, Area.EEPROM, True)
    BAUD_RATE = Register(8, 1, 1, Area.EEPROM, True)
    RETURN_DELAY_TIME = Register(9, 1, 250, Area.EEPROM, True)
    OPERATING_MODE = Register(11, 1, 3, Area.EEPROM, True)
    CURRENT_LIMIT = Register(38, 2, 1193, Area.EEPROM, True)
    VELOCITY_LIMIT = Register(44, 4, 350, Area.EEPROM, True)
    MAX_POSITION_LIMIT = Register(48, 4, 4095, Area.EEPROM, True)
    MIN_POSITION_LIMIT = Register(52, 4, 0, Area.EEPROM, True)
    TORQUE_ENABLE = Register(64, 1, 0, Area.RAM, True)
    STATUS_RETURN_LEVEL = Register(68, 1, 2, Area.RAM, True)
    HARDWARE_ERROR_STATUS = Register(70, 1, 0, Area.RAM, False)
    POSITION_D_GAIN = Register(80, 2, 0, Area.RAM, True)
    POSITION_I_GAIN = Register(82, 2, 0, Area.RAM, True)
    POSITION_P_GAIN = Register(84, 2, 800, Area.RAM, True)
    BUS_WATCHDOG = Register(98, 1, 0, Area.RAM, True, signed=True)
    GOAL_CURRENT = Register(102, 2, 0, Area.RAM, True, signed=True)
    GOAL_VELOCITY = Register(104, 4, 0, Area.RAM, True, signed=True)
    PROFILE_ACCELERATION = Register(108, 4, 0, Area.RAM, True)
    PROFILE_VELOCITY = Register(112, 4, 0, Area.RAM, True)
    GOAL_POSITION = Register(116, 4, 2048, Area.RAM, True, signed=True)
    MOVING = Register(122, 1, 0, Area.RAM, False)
    PRESENT_CURRENT = Register(126, 2, 0, Area.RAM, False, signed=True)
    PRESENT_VELOCITY = Register(128, 4, 0, Area.RAM, False, signed=True)
    PRESENT_POSITION = Register(132, 4, 2048, Area.RAM, False, signed=True)
    PRESENT_INPUT_VOLTAGE = Register(144, 2, 120, Area.RAM, False)
    PRESENT_TEMPERATURE = Register(146, 1, 30, Area.RAM, False)


XM430_MODEL_NUMBER = 1020
CONTROL_TABLE_SIZE = 147  # one past the last byte of PRESENT_TEMPERATURE


class OperatingMode(enum.IntEnum):
    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


class HardwareError(enum.IntFlag):
    """Bits of HARDWARE_ERROR_STATUS; any of them sets the alert bit of every status packet the motor sends."""

    INPUT_VOLTAGE = 0x01
    OVERHEATING = 0x04
    MOTOR_ENCODER = 0x08
    ELECTRICAL_SHOCK = 0x10
    OVERLOAD = 0x20


class BaudRate(enum.IntEnum):
    """Values of the BAUD_RATE register, named by the rate they select."""

    B9600 = 0
    B57600 = 1
    B115200 = 2
    B1000000 = 3
    B2000000 = 4
    B3000000 = 5
    B4000000 = 6

    @property
    def bits_per_second(self) -> int:
        return int(self.name[1:])


@dataclasses.dataclass(frozen=True)
class Unit:
    """SI value = (raw - offset) * scale."""

    scale: float
    offset: int = 0
    si: str = ""


POSITION_UNIT = Unit(2 * math.pi / 4096, 2048, "rad")  # 4096 counts per turn, 2048 = centre = 0 rad
VELOCITY_UNIT = Unit(0.229 * 2 * math.pi / 60, 0, "rad/s")  # 0.229 rpm per count
CURRENT_UNIT = Unit(2.69e-3, 0, "A")  # about 2.69 mA per count
RETURN_DELAY_UNIT = Unit(2e-6, 0, "s")
BUS_WATCHDOG_UNIT = Unit(20e-3, 0, "s")

UNITS: dict[XM430, Unit] = {
    XM430.GOAL_POSITION: POSITION_UNIT,
    XM430.PRESENT_POSITION: POSITION_UNIT,
    XM430.MAX_POSITION_LIMIT: POSITION_UNIT,
    XM430.MIN_POSITION_LIMIT: POSITION_UNIT,
    XM430.GOAL_VELOCITY: VELOCITY_UNIT,
    XM430.PRESENT_VELOCITY: VELOCITY_UNIT,
    XM430.VELOCITY_LIMIT: VELOCITY_UNIT,
    XM430.PROFILE_VELOCITY: VELOCITY_UNIT,
    XM430.GOAL_CURRENT: CURRENT_UNIT,
    XM430.PRESENT_CURRENT: CURRENT_UNIT,
    XM430.CURRENT_LIMIT: CURRENT_UNIT,
    XM430.RETURN_DELAY_TIME: RETURN_DELAY_UNIT,
    XM430.BUS_WATCHDOG: BUS_WATCHDOG_UNIT,
}


def to_si(register: XM430, raw: int) -> float:
    unit = UNITS[register]
    return (raw - unit.offset) * unit.scale


def from_si(register: XM430, value: float) -> int:
    """The nearest raw value; raises ``ValueError`` naming the register when it does not fit."""
    unit = UNITS[register]
    raw = round(value / unit.scale) + unit.offset
    bits = 8 * register.value.size
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if register.value.signed else (0, (1 << bits) - 1)
    if not low <= raw <= high:
        raise ValueError(f"{register.name}: {value} {unit.si} is raw {raw}, outside [{low}, {high}]")
    return raw


def decode_raw(register: XM430, data: bytes) -> int:
    """Interpret ``register``'s little-endian bytes with its sign."""
    return int.from_bytes(data[: register.value.size], "little", signed=register.value.signed)


def encode_raw(register: XM430, raw: int) -> bytes:
    return int(raw).to_bytes(register.value.size, "little", signed=register.value.signed)
