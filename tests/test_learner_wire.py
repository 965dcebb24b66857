"""The robot <-> learner wire format: round trips, golden bytes, and every way a message is refused."""

import dataclasses
import hashlib

import msgpack
import numpy as np
import pytest

from firmware_bridge.learner_wire import (
    MAX_BATCH,
    Ack,
    Hello,
    MessageType,
    PolicyResult,
    TransitionLayout,
    WireError,
    decode_ack,
    decode_hello,
    decode_policy,
    decode_policy_result,
    decode_transitions,
    encode_ack,
    encode_hello,
    encode_policy,
    encode_policy_result,
    encode_transitions,
    parse_header,
    with_lowest_held,
)
from learner_helpers import HASH, batch

LAYOUT = TransitionLayout(obs_dim=7, act_dim=3, num_joints=3)

ACK_GOLDEN = (
    "88a570726f746fb1726f626f742d7361632f6c6561726e6572a17601a474797065a361636ba5726f626f74a6636c61772d31a573706f6f"
    "6cb030306161313162623232636333336464a8726563656976656429a764757261626c651fa3676170c2"
)


def roundtrip(frames):
    return [bytes(f) for f in frames]


def test_ack_matches_golden_bytes_and_decodes():
    frames = encode_ack(Ack("claw-1", "00aa11bb22cc33dd", 41, 31, False))
    assert frames[0].hex() == ACK_GOLDEN
    kind, header = parse_header(frames)
    assert kind is MessageType.ACK
    assert decode_ack(header) == Ack("claw-1", "00aa11bb22cc33dd", 41, 31, False)


def test_transitions_round_trip_exactly():
    b = batch(LAYOUT, 5, first_seq=100, extras=("valve_angle", "valve_velocity"))
    frames = roundtrip(encode_transitions(b, LAYOUT))
    assert len(frames) == 1 + len(LAYOUT.arrays(2))
    kind, header = parse_header(frames)
    assert kind is MessageType.TRANSITIONS
    out = decode_transitions(header, frames, LAYOUT)
    assert (out.first_seq, out.last_seq, out.count, out.extras) == (100, 104, 5, ["valve_angle", "valve_velocity"])
    for name, values in b.arrays.items():
        np.testing.assert_array_equal(out.arrays[name], values)
    state = out.state("next_state", 2)
    assert state.extras["valve_velocity"] == pytest.approx(float(b.arrays["next_state.extras"][2, 1]))
    assert state.joint_pos.dtype == np.float64
    assert out.run == ""  # a robot from before runs were named sends none
    tagged = roundtrip(encode_transitions(dataclasses.replace(b, run="0123abcd0123abcd"), LAYOUT))
    assert decode_transitions(parse_header(tagged)[1], tagged, LAYOUT).run == "0123abcd0123abcd"
    with pytest.raises(WireError, match="run"):
        bad = header_with(tagged, run="not a name!")
        decode_transitions(parse_header(bad)[1], bad, LAYOUT)


def test_lowest_held_is_patched_without_touching_the_arrays():
    frames = roundtrip(encode_transitions(batch(LAYOUT, 2, first_seq=10), LAYOUT))
    patched = with_lowest_held(frames, 7)
    assert patched[1:] == frames[1:]
    assert decode_transitions(parse_header(patched)[1], patched, LAYOUT).lowest_held == 7


def test_hello_policy_and_result_round_trip():
    hello = Hello("quad-a", "0123456789abcdef", 12, 4, 3, "", HASH, "quadruped_walk")
    assert decode_hello(parse_header(encode_hello(hello))[1]) == hello
    data = b"onnx bytes"
    frames = encode_policy(9, data)
    kind, header = parse_header(frames)
    msg = decode_policy(header, frames)
    assert (kind, msg.version, msg.data, msg.sha256) == (MessageType.POLICY, 9, data, hashlib.sha256(data).hexdigest())
    result = PolicyResult("quad-a", 9, msg.sha256, False, ["robot: wrong robot"])
    assert decode_policy_result(parse_header(encode_policy_result(result))[1]) == result


def header_with(frames, **changes):
    header = msgpack.unpackb(frames[0])
    header.update(changes)
    return [msgpack.packb(header), *frames[1:]]


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda f: [b"\xc1not msgpack", *f[1:]], "header"),
        (lambda f: [msgpack.packb([1, 2]), *f[1:]], "header"),
        (lambda f: [b"\x00" * 70000, *f[1:]], "header"),
        (lambda f: header_with(f, proto="other"), "proto"),
        (lambda f: header_with(f, v=2), "v"),
        (lambda f: header_with(f, type="shutdown"), "type"),
    ],
)
def test_bad_headers_raise_naming_the_field(mutate, field):
    frames = mutate(roundtrip(encode_transitions(batch(LAYOUT, 2), LAYOUT)))
    with pytest.raises(WireError) as err:
        parse_header(frames)
    assert err.value.field == field


def decode(frames):
    return decode_transitions(parse_header(frames)[1], frames, LAYOUT)


def test_arrays_are_checked_against_the_robot_layout_before_reading():
    good = roundtrip(encode_transitions(batch(LAYOUT, 4), LAYOUT))
    header = msgpack.unpackb(good[0])
    cases = {}
    wide = [list(s) for s in header["arrays"]]
    wide[0][2] = [4, 8]  # an observation wider than this robot's
    cases["arrays[0] (obs)"] = header_with(good, arrays=wide)
    dtype = [list(s) for s in header["arrays"]]
    dtype[1][1] = "float64"
    cases["arrays[1] (action)"] = header_with(good, arrays=dtype)
    renamed = [list(s) for s in header["arrays"]]
    renamed[2][0] = "reward"
    cases["arrays[2]"] = header_with(good, arrays=renamed)
    cases["arrays[3] (next_obs)"] = [*good[:4], good[4][:-4], *good[5:]]  # a frame shorter than its shape
    cases["frames"] = good[:-1]
    cases["robot"] = header_with(good, robot="x" * 65)
    cases["first_seq"] = header_with(good, first_seq=-1)
    cases["goals"] = header_with(good, goals={"valve_angle": "far"})
    cases["goals.valve_angle (nan)"] = header_with(good, goals={"valve_angle": float("nan")})
    cases["goals.valve_angle (inf)"] = header_with(good, goals={"valve_angle": float("inf")})
    cases["extras"] = header_with(good, extras=[f"e{i}" for i in range(40)])
    for field, frames in cases.items():
        with pytest.raises(WireError) as err:
            decode(frames)
        assert err.value.field.startswith(field.split(" ")[0].split(".")[0]), (field, err.value)
        if "(nan)" in field or "(inf)" in field:
            assert err.value.field == "goals.valve_angle" and "expected a finite number" in str(err.value)


def test_batch_size_above_the_bound_is_refused_without_allocating():
    good = roundtrip(encode_transitions(batch(LAYOUT, 1), LAYOUT))
    header = msgpack.unpackb(good[0])
    huge = [[name, dtype, [MAX_BATCH + 1, *shape[1:]]] for name, dtype, shape in header["arrays"]]
    with pytest.raises(WireError, match="batch size"):
        decode(header_with(good, arrays=huge))


def test_policy_size_must_match_the_frame_and_the_limit():
    frames = encode_policy(3, b"x" * 100)
    header = parse_header(frames)[1]
    with pytest.raises(WireError, match="size"):
        decode_policy(header, [frames[0], b"x" * 99])
    with pytest.raises(WireError, match="size"):
        decode_policy(header, frames, max_bytes=50)
