"""Dynamixel Protocol 2.0 packets, pure: build and parse instruction and status packets.

The host side talks through the official SDK; this module is what a *device*
needs (the virtual claw) and what tests use to write golden packets. The CRC
and the byte stuffing are the SDK's own routines, so both sides share one
implementation of the e-Manual's algorithms.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from dynamixel_sdk import Protocol2PacketHandler

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_PACKET = 1024  # the SDK's RXPACKET_MAX_LEN

_SDK = Protocol2PacketHandler()


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93


class StatusError(enum.IntEnum):
    """Low bits of a status packet's error byte; bit 7 (``ALERT``) flags a hardware error."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


ALERT = 0x80


def crc16_umts(data: bytes) -> int:
    """CRC-16/UMTS (poly 0x8005, init 0, not reflected): the Protocol 2.0 CRC."""
    return _SDK.updateCRC(0, data, len(data))


def build_packet(dxl_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet: header, id, stuffed length, instruction, stuffed parameters, CRC."""
    if not 0 <= dxl_id <= 0xFE:
        raise ValueError(f"id {dxl_id} is outside 0..254")
    unstuffed = bytearray(HEADER + bytes([dxl_id]) + struct.pack("<H", len(params) + 3) + bytes([instruction]) + params)
    packet = _SDK.addStuffing(list(unstuffed) + [0, 0])
    crc = crc16_umts(bytes(packet[:-2]))
    return bytes(packet[:-2]) + struct.pack("<H", crc)


def status_packet(dxl_id: int, error: int, params: bytes = b"") -> bytes:
    return build_packet(dxl_id, Instruction.STATUS, bytes([error]) + params)


@dataclasses.dataclass(frozen=True)
class Packet:
    """One parsed packet, stuffing removed. For a status packet ``params`` starts with the error byte."""

    dxl_id: int
    instruction: int
    params: bytes


@dataclasses.dataclass
class PacketCounters:
    packets: int = 0
    crc_errors: int = 0
    oversized: int = 0  # a length field beyond MAX_PACKET: a corrupted header
    skipped_bytes: int = 0  # noise before a header

    @property
    def bad_frames(self) -> int:
        return self.crc_errors + self.oversized


class PacketParser:
    """Streaming parser: ``feed(bytes) -> [Packet, ...]``, resynchronizing on the next header."""

    def __init__(self) -> None:
        self.counters = PacketCounters()
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self._buffer += data
        out = []
        while True:
            start = self._buffer.find(HEADER)
            if start < 0:
                # Keep a possible partial header at the end; everything before it is noise.
                tail = min(3, len(self._buffer))
                keep = next((k for k in range(tail, 0, -1) if HEADER.startswith(bytes(self._buffer[-k:]))), 0)
                self._drop(len(self._buffer) - keep)
                return out
            self._drop(start)
            if len(self._buffer) < 7:
                return out
            length = struct.unpack_from("<H", self._buffer, 5)[0]
            total = 7 + length
            if length < 3 or total > MAX_PACKET:
                self.counters.oversized += 1
                self._drop(1)
                continue
            if len(self._buffer) < total:
                return out
            packet = bytes(self._buffer[:total])
            if crc16_umts(packet[:-2]) != struct.unpack_from("<H", packet, total - 2)[0]:
                self.counters.crc_errors += 1
                self._drop(1)
                continue
            del self._buffer[:total]
            unstuffed = _SDK.removeStuffing(list(packet))
            body_end = 7 + struct.unpack_from("<H", bytes(unstuffed[5:7]))[0] - 2
            self.counters.packets += 1
            out.append(Packet(unstuffed[4], unstuffed[7], bytes(unstuffed[8:body_end])))

    def _drop(self, n: int) -> None:
        self.counters.skipped_bytes += n
        del self._buffer[:n]
