"""Motor-board messages: golden bytes for every type (docs/protocol.md), round trips, clear errors."""

import numpy as np
import pytest

from firmware_bridge.motor_messages import (
    Arm,
    Command,
    Disarm,
    DisarmMode,
    Heartbeat,
    Info,
    InfoRequest,
    MessageError,
    State,
    UnknownMessageType,
    decode_body,
    encode_body,
)
from protocol_samples import COMMAND, STATE

# Worked by hand from the tables in docs/protocol.md: header (version, type, seq LE), then the payload.
GOLDEN_BODIES = [
    (COMMAND, 0x0102,
     "01 01 02 01"  # v1, COMMAND, seq 0x0102
     " 01 02"  # flags ARM, 2 motors
     " 88 13 d0 07 88 13 00 00"  # 0.5 rad = 5000, kp 20 = 2000, kd 0.5 = 5000, 0 N m
     " 2c cf 00 00 00 00 24 fa"),  # -1.25 rad = -12500, kp 0, kd 0, -1.5 N m = -1500
    (Arm(), 1, "01 02 01 00"),
    (Disarm(DisarmMode.TORQUE_OFF), 2, "01 03 02 00 01"),
    (Disarm(), 3, "01 03 03 00 00"),
    (Heartbeat(), 7, "01 04 07 00"),
    (InfoRequest(), 0xFFFF, "01 05 ff ff"),
    (STATE, 0x0203,
     "01 81 03 02"  # v1, STATE, seq 0x0203
     " 15 cd 5b 07 02 01 02 03 00 02"  # 123456789 us, last command 0x0102, ARMED, WATCHDOG|MOTOR_FAULT, 2 motors
     " 64 00 38 ff 30 75"  # roll 0.01, pitch -0.02, yaw 3.0 (1e-4 rad)
     " 64 00 00 00 9c ff"  # gyro 0.1, 0, -0.1 (1e-3 rad/s)
     " 88 13 e8 03 dc 05 01"  # 0.5 rad, 2 rad/s = 1000, 1.5 A = 1500, ENABLED
     " 2c cf fe ff 00 00 11"),  # -1.25 rad, -0.004 rad/s = -2, 0 A, ENABLED|FAILED
    (Info((1, 2, 3), (1, 2), (0x5001, 0x5001)), 9, "01 85 09 00 01 02 03 02 01 01 50 02 01 50"),
]  # fmt: skip


def _same(a, b):
    assert type(a) is type(b)
    for name, value in vars(a).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(value, getattr(b, name), atol=1e-12)
        else:
            assert value == getattr(b, name), name


@pytest.mark.parametrize("msg,seq,golden", GOLDEN_BODIES, ids=lambda x: type(x).__name__)
def test_golden_bytes_and_round_trip(msg, seq, golden):
    body = encode_body(msg, seq)
    assert body == bytes.fromhex(golden)
    got_seq, decoded = decode_body(body)
    assert got_seq == seq
    _same(decoded, msg)


def test_round_trip_quantizes_to_the_documented_scales():
    rng = np.random.default_rng(0)
    position = rng.uniform(-3.2, 3.2, 8)
    cmd = Command(position=position, kp=rng.uniform(0, 600, 8), kd=rng.uniform(0, 6, 8), torque=rng.uniform(-30, 30, 8))
    _, back = decode_body(encode_body(cmd, 5))
    assert np.max(np.abs(back.position - position)) <= 0.5e-4 + 1e-12
    assert np.max(np.abs(back.kp - cmd.kp)) <= 0.5e-2 + 1e-12
    assert np.max(np.abs(back.kd - cmd.kd)) <= 0.5e-4 + 1e-12
    assert np.max(np.abs(back.torque - cmd.torque)) <= 0.5e-3 + 1e-12


def test_command_out_of_range_or_not_finite_names_the_motor_and_field():
    with pytest.raises(MessageError, match=r"position\[1\]: 4.0 is outside the encodable range \[-3.2768, 3.2767\]"):
        encode_body(Command(np.array([0.0, 4.0]), np.zeros(2), np.zeros(2), np.zeros(2)), 0)
    with pytest.raises(MessageError, match=r"kp\[0\]: -1.0 is outside"):
        encode_body(Command(np.zeros(1), np.array([-1.0]), np.zeros(1), np.zeros(1)), 0)
    with pytest.raises(MessageError, match=r"torque\[0\]: not finite \(nan\)"):
        encode_body(Command(np.zeros(1), np.zeros(1), np.zeros(1), np.array([np.nan])), 0)
    with pytest.raises(MessageError, match=r"kd: 1 values for 2 motors"):
        encode_body(Command(np.zeros(2), np.zeros(2), np.zeros(1), np.zeros(2)), 0)


def test_state_sensors_saturate_instead_of_failing():
    fast = State(**{**vars(STATE), "velocity": np.array([100.0, -100.0])})
    _, back = decode_body(encode_body(fast, 0))
    np.testing.assert_allclose(back.velocity, [32767 * 2e-3, -32768 * 2e-3])


@pytest.mark.parametrize(
    "body,error,text",
    [
        ("01 01", MessageError, "body is 2 bytes, shorter than the 4-byte header"),
        ("02 04 00 00", MessageError, "version byte is 2, this side speaks version 1"),
        ("01 42 00 00", UnknownMessageType, "type byte 0x42 is not a known message type"),
        ("01 01 00 00 00 02 88 13 d0 07 88 13 00 00", MessageError, "COMMAND: payload is 10 bytes, expected 18"),
        ("01 03 00 00 07", MessageError, r"DISARM: mode byte 7 is not one of \[0, 1\]"),
        ("01 04 00 00 00", MessageError, "HEARTBEAT: payload is 1 bytes, expected 0"),
    ],
)
def test_bad_bodies_raise_naming_the_problem(body, error, text):
    with pytest.raises(error, match=text):
        decode_body(bytes.fromhex(body))
