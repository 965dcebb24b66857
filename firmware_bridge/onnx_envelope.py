"""Tell "not an ONNX file" from "a truncated ONNX file" before onnxruntime sees the bytes.

onnxruntime answers both with the same "Protobuf parsing failed". The robot computer has no ``onnx``
package, so this walks the top level of the ``ModelProto`` protobuf wire format itself: a tag with a field
number or wire type that ``ModelProto`` does not have means another kind of file; a length that runs past
the end means the file was cut short. Only the outer fields are walked: the graph inside is left to
onnxruntime.
"""

from __future__ import annotations

from firmware_bridge.policy_contract import Mismatch, Problem

# onnx.proto ModelProto: field number -> (name, wire type). 0 = varint, 2 = length-delimited.
MODEL_PROTO_FIELDS = {
    1: ("ir_version", 0),
    2: ("producer_name", 2),
    3: ("producer_version", 2),
    4: ("domain", 2),
    5: ("model_version", 0),
    6: ("doc_string", 2),
    7: ("graph", 2),
    8: ("opset_import", 2),
    14: ("metadata_props", 2),
    20: ("training_info", 2),
    25: ("functions", 2),
    26: ("configuration", 2),
}


class _End(Exception):
    """The bytes ran out inside a varint."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise _End
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ValueError("varint longer than 10 bytes")


def check_model_bytes(data: bytes) -> list[Problem]:
    """Problems with the outer structure of a serialized ONNX model; empty when it looks whole."""
    if not data:
        return [(Mismatch.NOT_ONNX, "the file is empty")]
    seen: set[str] = set()
    pos = 0
    while pos < len(data):
        start = pos
        try:
            tag, pos = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            known = MODEL_PROTO_FIELDS.get(number)
            if known is None or known[1] != wire:
                return [(Mismatch.NOT_ONNX, f"byte {start}: field {number} with wire type {wire} is not part of an "
                                            f"ONNX ModelProto (file starts with {data[:8].hex(' ')})")]
            name = known[0]
            value, pos = _varint(data, pos)
        except _End:
            return [(Mismatch.TRUNCATED, f"the file ends at byte {len(data)} inside the field header at byte {start}")]
        except ValueError as exc:
            return [(Mismatch.NOT_ONNX, f"byte {start}: {exc}")]
        if wire == 2:
            if pos + value > len(data):
                return [(Mismatch.TRUNCATED, f"field {name!r} at byte {start} needs {value} bytes from byte {pos}, "
                                             f"the file ends at byte {len(data)} ({pos + value - len(data)} missing)")]
            pos += value
        seen.add(name)
    missing = [name for name in ("ir_version", "graph") if name not in seen]
    if missing:
        kind = Mismatch.TRUNCATED if "ir_version" in seen else Mismatch.NOT_ONNX
        return [(kind, f"no {' and no '.join(missing)} field in {len(data)} bytes")]
    return []
