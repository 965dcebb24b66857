"""Serial framing: CRC check value, golden frames, and the streaming decoder's counting and resync."""

import numpy as np
import pytest
from cobs import cobs

from firmware_bridge.motor_messages import (
    Arm,
    Command,
    CommandFlags,
    Disarm,
    Heartbeat,
    Info,
    InfoRequest,
    encode_body,
)
from firmware_bridge.serial_framing import (
    MAX_ENCODED_SIZE,
    FrameDecoder,
    crc16_ccitt_false,
    encode_frame,
)
from protocol_samples import COMMAND, STATE


def test_crc_matches_the_published_check_value():
    assert crc16_ccitt_false(b"123456789") == 0x29B1


GOLDEN_FRAMES = [
    # COBS code bytes mark where the zeros were; CRC little-endian before the final delimiter.
    (Arm(), 1, "04 01 02 01 03 25 af 00"),
    (Disarm(), 3, "04 01 03 03 01 03 d1 79 00"),
    (Heartbeat(), 7, "04 01 04 07 03 23 b7 00"),
    (InfoRequest(), 0xFFFF, "07 01 05 ff ff 8b 04 00"),
    (COMMAND, 0x0102, "0d 01 01 02 01 01 02 88 13 d0 07 88 13 01 03 2c cf 01 01 01 05 24 fa e9 09 00"),
    (STATE, 0x0203,
     "0d 01 81 03 02 15 cd 5b 07 02 01 02 03 03 02 64 06 38 ff 30 75 64 01 01 0e 9c ff 88 13 e8 03 dc 05 01"
     " 2c cf fe ff 01 04 11 c7 cf 00"),
    (Info((1, 2, 3), (1, 2), (0x5001, 0x5001)), 9, "04 01 85 09 0d 01 02 03 02 01 01 50 02 01 50 62 a3 00"),
]  # fmt: skip


@pytest.mark.parametrize("msg,seq,golden", GOLDEN_FRAMES, ids=lambda x: type(x).__name__)
def test_golden_frames_decode_back(msg, seq, golden):
    frame = encode_frame(msg, seq)
    assert frame == bytes.fromhex(golden)
    assert frame.count(0) == 1
    decoder = FrameDecoder()
    [(got_seq, decoded)] = decoder.feed(frame)
    assert got_seq == seq and type(decoded) is type(msg)
    assert decoder.counters.frames == 1 and decoder.counters.bad_frames == 0


def test_frames_split_at_every_byte_boundary_still_decode():
    stream = b"".join(encode_frame(Heartbeat(), s) for s in range(5)) + encode_frame(STATE, 5)
    decoder = FrameDecoder()
    got = [m for i in range(len(stream)) for m in decoder.feed(stream[i : i + 1])]
    assert [seq for seq, _ in got] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(got[-1][1].gyro, STATE.gyro)


def _framed(raw: bytes) -> bytes:
    return cobs.encode(raw) + b"\x00"


def _with_crc(body: bytes) -> bytes:
    return body + crc16_ccitt_false(body).to_bytes(2, "little")


@pytest.mark.parametrize(
    "bad,counter",
    [
        (bytes.fromhex("04 01 04 07 03 23 b6 00"), "crc_errors"),  # last CRC bit flipped
        (bytes.fromhex("09 01 04 07 00"), "malformed"),  # COBS code runs past the frame
        (_framed(_with_crc(bytes.fromhex("02 04 00 00"))), "malformed"),  # protocol version 2
        (_framed(_with_crc(bytes.fromhex("01 04 00 00 ff"))), "malformed"),  # heartbeat with a payload
        (_framed(bytes.fromhex("01 04 07")), "truncated"),
        (_framed(_with_crc(bytes.fromhex("01 42 00 00"))), "unknown_type"),
        (bytes(range(1, 256)) + b"\x05\x00", "oversized"),
    ],
)
def test_each_bad_frame_is_counted_once_and_the_next_good_frame_decodes(bad, counter):
    decoder = FrameDecoder()
    good = encode_frame(Heartbeat(), 100)
    got = decoder.feed(good[:3]) + decoder.feed(good[3:] + bad + encode_frame(Heartbeat(), 101))
    assert [seq for seq, _ in got] == [100, 101]
    assert getattr(decoder.counters, counter) == 1
    assert decoder.counters.bad_frames == 1
    assert decoder.counters.frames == 2


def test_a_long_run_without_delimiter_counts_once_as_oversized():
    decoder = FrameDecoder()
    for _ in range(100):
        decoder.feed(bytes([7]) * MAX_ENCODED_SIZE)
    assert decoder.feed(b"\x00" + encode_frame(Arm(), 0)) != []
    assert decoder.counters.oversized == 1


def _cmd(flags=CommandFlags(0)):
    return Command(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), flags)


def test_stale_and_duplicate_commands_are_dropped_but_arm_and_disarm_restart_the_order():
    decoder = FrameDecoder()
    stream = [encode_frame(_cmd(), s) for s in (10, 11, 11, 9, 14)]
    stream += [encode_frame(Heartbeat(), 5), encode_frame(Disarm(), 3), encode_frame(_cmd(), 4)]
    stream += [encode_frame(Arm(), 0), encode_frame(_cmd(), 1), encode_frame(_cmd(CommandFlags.ARM), 1)]
    got = decoder.feed(b"".join(stream))
    assert [(seq, type(m).__name__) for seq, m in got] == [
        (10, "Command"), (11, "Command"), (14, "Command"), (5, "Heartbeat"), (3, "Disarm"), (4, "Command"),
        (0, "Arm"), (1, "Command"), (1, "Command"),
    ]  # fmt: skip
    assert decoder.counters.out_of_order == 2


def test_sequence_numbers_wrap_around():
    decoder = FrameDecoder()
    got = decoder.feed(b"".join(encode_frame(_cmd(), s) for s in (65534, 65535, 0, 1)))
    assert [seq for seq, _ in got] == [65534, 65535, 0, 1]
    assert decoder.counters.bad_frames == 0


def test_a_restarted_peer_far_behind_is_accepted():
    decoder = FrameDecoder()
    decoder.feed(encode_frame(_cmd(), 40000))
    assert decoder.feed(encode_frame(_cmd(), 0)) != []


def test_command_body_fits_the_bandwidth_budget_in_docs():
    eight = Command(np.zeros(8), np.zeros(8), np.zeros(8), np.zeros(8))
    state8 = type(STATE)(**{**vars(STATE), **{k: np.zeros(8) for k in ("position", "velocity", "current")},
                           "status": np.zeros(8, np.uint8)})  # fmt: skip
    assert len(encode_body(eight, 0)) == 70 and len(encode_frame(eight, 0)) == 74
    assert len(encode_body(state8, 0)) == 82 and len(encode_frame(state8, 0)) == 86
