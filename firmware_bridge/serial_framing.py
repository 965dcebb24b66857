"""Serial framing for motor-board messages: COBS, a 0x00 delimiter, CRC-16/CCITT-FALSE, ordering.

Pure code. ``encode_frame`` turns a message into wire bytes; ``FrameDecoder``
takes whatever the line delivers, in pieces of any size, and returns the good
messages, counting and skipping every bad frame and resynchronizing on the
next delimiter.
"""

from __future__ import annotations

import binascii
import dataclasses

from cobs import cobs

from firmware_bridge.motor_messages import (
    HEADER,
    Arm,
    Command,
    CommandFlags,
    Disarm,
    Message,
    MessageError,
    UnknownMessageType,
    decode_body,
    encode_body,
)

DELIMITER = b"\x00"
CRC_SIZE = 2
# COBS spends one byte per 254 and the largest body (STATE, 16 motors) is 140 bytes with its CRC,
# so every legal frame is a single COBS block; anything longer is noise or a lost delimiter.
MAX_ENCODED_SIZE = 254
# A COMMAND whose sequence number is at most this far behind the newest accepted one is a stale
# duplicate; a bigger jump backwards is taken as the peer having restarted.
REORDER_WINDOW = 1024


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, not reflected; "123456789" -> 0x29B1."""
    return binascii.crc_hqx(data, 0xFFFF)


def encode_frame(msg: Message, seq: int) -> bytes:
    """Wire bytes for one message: COBS(body + CRC little-endian) + 0x00."""
    return frame_body(encode_body(msg, seq))


def frame_body(body: bytes) -> bytes:
    """Wire bytes for an encoded body."""
    return cobs.encode(body + crc16_ccitt_false(body).to_bytes(CRC_SIZE, "little")) + DELIMITER


@dataclasses.dataclass
class FrameCounters:
    """What a decoder has seen. Every bad frame lands in exactly one of the bad counters."""

    frames: int = 0  # good frames returned
    crc_errors: int = 0
    malformed: int = 0  # not valid COBS, wrong version, or a payload whose size does not fit its type
    truncated: int = 0  # too short to hold a header and a CRC
    oversized: int = 0  # more than MAX_ENCODED_SIZE bytes without a delimiter
    unknown_type: int = 0
    out_of_order: int = 0  # a COMMAND numbered at or behind the newest accepted one

    @property
    def bad_frames(self) -> int:
        bad = (self.crc_errors, self.malformed, self.truncated, self.oversized, self.unknown_type, self.out_of_order)
        return sum(bad)

    def as_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "bad_frames": self.bad_frames}


def _is_ordered(msg: Message) -> bool:
    # Only a plain COMMAND moves motors on the strength of its number, so only it is checked. Arming
    # starts a session and disarming must never be dropped: both restart the order whatever their
    # number, so a restarted host is not mistaken for a replay. Other messages are idempotent and
    # their replies are matched by the sequence number they echo.
    return isinstance(msg, Command) and CommandFlags.ARM not in msg.flags


def _restarts_order(msg: Message) -> bool:
    return isinstance(msg, (Arm, Disarm)) or (isinstance(msg, Command) and CommandFlags.ARM in msg.flags)


class BodyDecoder:
    """Decodes bare message bodies (what ZMQ carries), counting bad ones and dropping stale commands."""

    def __init__(self, counters: FrameCounters | None = None) -> None:
        self.counters = counters or FrameCounters()
        self._last_seq: int | None = None

    def decode(self, body: bytes) -> tuple[int, Message] | None:
        try:
            seq, msg = decode_body(body)
        except UnknownMessageType:
            self.counters.unknown_type += 1
            return None
        except MessageError:
            self.counters.malformed += 1
            return None
        if _is_ordered(msg) and self._last_seq is not None:
            if (self._last_seq - seq) & 0xFFFF < REORDER_WINDOW:
                self.counters.out_of_order += 1
                return None
        if _is_ordered(msg) or _restarts_order(msg):
            self._last_seq = seq
        self.counters.frames += 1
        return seq, msg


class FrameDecoder:
    """Streaming decoder: ``feed(bytes) -> [(seq, message), ...]``, with ``counters``."""

    def __init__(self) -> None:
        self.counters = FrameCounters()
        self._bodies = BodyDecoder(self.counters)
        self._buffer = bytearray()
        self._overflowed = False

    def feed(self, data: bytes) -> list[tuple[int, Message]]:
        out = []
        while data:
            end = data.find(DELIMITER)
            chunk, data = (data, b"") if end < 0 else (data[:end], data[end + 1 :])
            if not self._overflowed:
                self._buffer += chunk
                if len(self._buffer) > MAX_ENCODED_SIZE:
                    self.counters.oversized += 1
                    self._overflowed = True
                    self._buffer.clear()
            if end < 0:
                break
            if self._overflowed:
                self._overflowed = False  # the delimiter ends the oversized frame: resynchronized
                continue
            frame = bytes(self._buffer)
            self._buffer.clear()
            decoded = self._decode_frame(frame)
            if decoded is not None:
                out.append(decoded)
        return out

    def _decode_frame(self, frame: bytes) -> tuple[int, Message] | None:
        if not frame:
            return None  # back-to-back delimiters are idle fill, not a frame
        try:
            raw = cobs.decode(frame)
        except cobs.DecodeError:
            self.counters.malformed += 1
            return None
        if len(raw) < HEADER.size + CRC_SIZE:
            self.counters.truncated += 1
            return None
        body, crc = raw[:-CRC_SIZE], int.from_bytes(raw[-CRC_SIZE:], "little")
        if crc16_ccitt_false(body) != crc:
            self.counters.crc_errors += 1
            return None
        return self._bodies.decode(body)
