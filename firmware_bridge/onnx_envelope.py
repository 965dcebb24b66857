"""Tell "not an ONNX file" from "a truncated ONNX file" before onnxruntime sees the bytes.

onnxruntime answers both with the same "Protobuf parsing failed". The robot computer has no ``onnx``
package, so this walks the top level of the ``ModelProto`` protobuf wire format itself. Serializers write
fields in number order, so a model starts with field 1 (``ir_version``, a varint); anything else, or a
known field with the wrong wire type, means another kind of file. A length that runs past the end means
the file was cut short. Fields this table does not know (a newer ONNX) are skipped. Only the outer fields
are walked: the graph inside is left to onnxruntime.
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


# Wire type -> payload size in bytes (0: a varint, 2: a varint length, then that many bytes).
FIELD_SIZES = {0: 0, 1: 8, 2: 0, 5: 4}


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
    if data[0] != 0x08:  # tag of field 1 (ir_version), wire type 0
        return [(Mismatch.NOT_ONNX, f"an ONNX model starts with its ir_version (byte 0x08), this file starts "
                                    f"with {data[:8].hex(' ')}")]
    seen: set[str] = set()
    pos = 0
    while pos < len(data):
        start = pos
        try:
            tag, pos = _varint(data, pos)
            number, wire = tag >> 3, tag & 7
            name, expected_wire = MODEL_PROTO_FIELDS.get(number, (f"field {number}", wire))
            if number == 0 or wire != expected_wire or wire not in FIELD_SIZES:
                return [(Mismatch.NOT_ONNX, f"byte {start}: {name} with wire type {wire} does not fit an ONNX "
                                            f"ModelProto")]
            if wire == 0:
                _, pos = _varint(data, pos)
                size = 0
            elif wire == 2:
                size, pos = _varint(data, pos)
            else:
                size = FIELD_SIZES[wire]
        except _End:
            return [(Mismatch.TRUNCATED, f"the file ends at byte {len(data)} inside the field header at byte {start}")]
        except ValueError as exc:
            return [(Mismatch.NOT_ONNX, f"byte {start}: {exc}")]
        if pos + size > len(data):
            return [(Mismatch.TRUNCATED, f"{name!r} at byte {start} needs {size} bytes from byte {pos}, "
                                         f"the file ends at byte {len(data)} ({pos + size - len(data)} missing)")]
        pos += size
        seen.add(name)
    if "graph" not in seen:
        return [(Mismatch.TRUNCATED, f"no graph in {len(data)} bytes")]
    return []
