"""Dynamixel Protocol 2.0: published CRC and packet examples, stuffing, the streaming parser, unit round trips."""

import math

import numpy as np
import pytest

from firmware_bridge.dynamixel_packets import Instruction, PacketParser, build_packet, crc16_umts, status_packet
from firmware_bridge.dynamixel_table import UNITS, XM430, decode_raw, encode_raw, from_si, to_si


def test_crc_matches_the_published_check_value_and_ping_example():
    assert crc16_umts(b"123456789") == 0xFEE8
    assert crc16_umts(bytes.fromhex("ff ff fd 00 01 03 00 01")) == 0x4E19


@pytest.mark.parametrize(
    "packet,golden",
    [
        # The e-Manual's examples: ping ID 1, read present position (132, 4 B), write 512 to goal position.
        (build_packet(1, Instruction.PING), "ff ff fd 00 01 03 00 01 19 4e"),
        (build_packet(1, Instruction.READ, bytes([0x84, 0, 4, 0])), "ff ff fd 00 01 07 00 02 84 00 04 00 1d 15"),
        (build_packet(1, Instruction.WRITE, bytes([0x74, 0, 0, 2, 0, 0])),
         "ff ff fd 00 01 09 00 03 74 00 00 02 00 00 ca 89"),
        # Ping reply of an XM430-W210 (model 1030), firmware 0x26.
        (status_packet(1, 0, bytes([0x06, 0x04, 0x26])), "ff ff fd 00 01 07 00 55 00 06 04 26 65 5d"),
    ],
)  # fmt: skip
def test_packets_match_the_published_examples(packet, golden):
    assert packet == bytes.fromhex(golden)


def test_stuffing_adds_fd_after_ff_ff_fd_counts_it_in_length_and_parser_removes_it():
    params = bytes([0x74, 0x00, 0xFF, 0xFF, 0xFD, 0x00])
    packet = build_packet(1, Instruction.WRITE, params)
    assert packet[:-2] == bytes.fromhex("ff ff fd 00 01 0a 00 03 74 00 ff ff fd fd 00")
    assert int.from_bytes(packet[-2:], "little") == crc16_umts(packet[:-2])
    [parsed] = PacketParser().feed(packet)
    assert (parsed.dxl_id, parsed.instruction, parsed.params) == (1, Instruction.WRITE, params)


def test_parser_skips_noise_and_corrupt_packets_and_resynchronizes():
    ping = build_packet(7, Instruction.PING)
    corrupt = bytearray(build_packet(3, Instruction.READ, bytes([132, 0, 4, 0])))
    corrupt[9] ^= 0x10
    stream = b"\x01\xff\xff" + ping + bytes(corrupt) + b"\xfd\x00" + ping
    parser = PacketParser()
    got = [p for i in range(0, len(stream), 3) for p in parser.feed(stream[i : i + 3])]
    assert [(p.dxl_id, p.instruction) for p in got] == [(7, Instruction.PING), (7, Instruction.PING)]
    assert parser.counters.crc_errors == 1
    assert parser.counters.packets == 2


def test_control_table_matches_the_xm430_manual():
    assert (XM430.GOAL_POSITION.value.address, XM430.GOAL_POSITION.value.size) == (116, 4)
    assert (XM430.PRESENT_CURRENT.value.address, XM430.PRESENT_VELOCITY.value.address) == (126, 128)
    assert XM430.PRESENT_POSITION.value.address + XM430.PRESENT_POSITION.value.size == 136
    addresses = sorted((r.value.address, r.value.address + r.value.size, r.name) for r in XM430)
    for (_, end, name), (start, _, nxt) in zip(addresses, addresses[1:]):
        assert end <= start, f"{name} overlaps {nxt}"


@pytest.mark.parametrize("register", sorted(UNITS, key=lambda r: r.name), ids=lambda r: r.name)
def test_unit_conversions_round_trip(register):
    info = register.value
    bits = 8 * info.size
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if info.signed else (0, (1 << bits) - 1)
    for raw in np.unique(np.linspace(max(low, -100000), min(high, 100000), 41).astype(int)):
        assert from_si(register, to_si(register, int(raw))) == raw
        assert decode_raw(register, encode_raw(register, int(raw))) == raw


def test_units_are_the_xm430_ones():
    assert to_si(XM430.PRESENT_POSITION, 2048) == 0.0
    assert to_si(XM430.PRESENT_POSITION, 3072) == pytest.approx(math.pi / 2)
    assert to_si(XM430.PRESENT_VELOCITY, 100) == pytest.approx(22.9 * 2 * math.pi / 60)
    assert to_si(XM430.PRESENT_CURRENT, -1000) == pytest.approx(-2.69)
    assert decode_raw(XM430.PRESENT_CURRENT, bytes([0x18, 0xFC])) == -1000
    with pytest.raises(ValueError, match="GOAL_CURRENT: 100.0 A is raw 37175, outside"):
        from_si(XM430.GOAL_CURRENT, 100.0)
