"""Noise on the line: random bytes, bit flips, truncations and replays between valid frames, over a real pty.

The virtual quadruped must answer every valid frame, count every bad one in
the right total, and never raise.
"""

import threading

import numpy as np
import serial

from firmware_bridge.config_paths import resolve_robot
from firmware_bridge.motor_messages import Arm, Command, Heartbeat, State
from firmware_bridge.serial_framing import MAX_ENCODED_SIZE, FrameDecoder, encode_frame
from firmware_bridge.spec import RobotSpec
from sim.mujoco_backend import MujocoBackend
from sim.virtual_robot_server import build_robot, make_server, serving

SPEC = RobotSpec.load(resolve_robot("quadruped"))


def _noise(rng: np.random.Generator, valid: list[bytes]) -> tuple[bytes, int, int]:
    """One injection: (bytes, bad frames it makes, out-of-order replays among them)."""
    kind = rng.integers(5)
    if kind == 0:  # random bytes, no delimiter inside, then one
        junk = rng.integers(1, 256, rng.integers(1, 120), dtype=np.uint8).tobytes() + b"\x00"
    elif kind == 1:  # a valid frame with one bit flipped (never the delimiter, so the next frame stays whole)
        frame = bytearray(valid[rng.integers(len(valid))][:-1])
        frame[rng.integers(len(frame))] ^= 1 << int(rng.integers(8))
        junk = bytes(frame) + b"\x00"
    elif kind == 2:  # a valid frame cut short
        frame = valid[rng.integers(len(valid))]
        junk = frame[: rng.integers(1, len(frame) - 1)] + b"\x00"
    elif kind == 3:  # a line that never stops: oversized
        junk = rng.integers(1, 256, MAX_ENCODED_SIZE + 50, dtype=np.uint8).tobytes() + b"\x00"
    else:  # an old command sent again
        return valid[0], 1, 1
    chunks = [c for c in junk.split(b"\x00") if c]
    return junk, len(chunks), 0


def test_noise_between_frames_is_counted_skipped_and_every_valid_frame_is_answered():
    rng = np.random.default_rng(7)
    robot = build_robot(SPEC, MujocoBackend(SPEC), lockstep=True, watchdog_s=0)
    command = Command(SPEC.start, SPEC.kp, SPEC.kd, np.zeros(8))
    stream, sent, expected_bad, expected_replays = [encode_frame(Arm(), 1)], [1], 0, 0
    valid = []
    for seq in range(2, 302):
        frame = encode_frame(command if seq % 2 == 0 else Heartbeat(), seq)
        stream.append(frame)
        sent.append(seq)
        if seq % 2 == 0:
            valid.insert(0, frame)  # valid[0] is the newest command: replaying it is out of order
        junk, bad, replays = _noise(rng, valid)
        stream.append(junk)
        expected_bad += bad
        expected_replays += replays
    wire = b"".join(stream)

    with serving(make_server(robot, serial=True)) as server:
        port = serial.Serial(server.path, timeout=0.5)
        replies, decoder = [], FrameDecoder()

        def read_replies():
            while len(replies) < len(sent):
                data = port.read(max(1, port.in_waiting))
                if not data:
                    return
                replies.extend(decoder.feed(data))

        reader = threading.Thread(target=read_replies)
        reader.start()
        for start in range(0, len(wire), 97):  # odd-sized writes: frames straddle writes
            port.write(wire[start : start + 97])
        reader.join(timeout=30)
        port.close()
        device = server.endpoint.counters()

    assert [reply.last_command_seq for _, reply in replies] == sent
    assert all(isinstance(reply, State) for _, reply in replies)
    assert decoder.counters.bad_frames == 0
    assert device["frames"] == len(sent)
    assert device["bad_frames"] == expected_bad
    assert device["out_of_order"] == expected_replays > 0
    assert device["oversized"] > 0 and device["crc_errors"] > 0 and device["malformed"] + device["truncated"] > 0
    assert robot.counters.commands == len(sent) // 2
