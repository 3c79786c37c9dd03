"""The external-data references of an .onnx file, read from its protobuf wire format with the stdlib.

The runtime may not import ``onnx`` (apps ship onnxruntime and numpy only), yet it must know which
files a graph will make onnxruntime read before onnxruntime reads them: a tensor whose
``external_data`` location is ``../../home/me/.ssh/id_rsa`` or ``/etc/passwd`` is an attack, and
one that names a file the manifest does not list escapes the sha256 check. The walk below reads
only what leads to tensors and skips everything else by its length, so a 1 GiB graph costs a few
thousand field headers. Every path from ModelProto to a TensorProto in onnx.proto3 (onnx 1.23):

- ModelProto.graph (7), .training_info (20: TrainingInfoProto.initialization 1, .algorithm 2),
  .functions (25);
- GraphProto.initializer (5), .sparse_initializer (15: SparseTensorProto.values 1, .indices 2),
  .node (1);
- NodeProto.attribute (5); FunctionProto.node (7) and .attribute_proto (11: the default values of
  the function's attributes, which onnxruntime loads);
- AttributeProto.t (5), .tensors (10), .sparse_tensor (22), .sparse_tensors (23), and the
  subgraphs .g (6) and .graphs (11), walked again from GraphProto.

A tensor counts as external when its data_location is EXTERNAL or when it carries a ``location``
entry at all; every ``location`` entry is reported (a parser that keeps the last one and one that
keeps the first must both be covered).

Field numbers are those of onnx.proto3 (ModelProto, GraphProto, NodeProto, AttributeProto,
TensorProto, SparseTensorProto, FunctionProto, TrainingInfoProto, StringStringEntryProto).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MAX_DEPTH = 64  # subgraph nesting (If/Loop bodies); deeper is refused as malformed

# message -> {field number: the message type found there}
_CHILDREN: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node", 11: "attribute"},  # attribute_proto: default values of the function's attributes
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}
_EXTERNAL = 1  # TensorProto.DataLocation.EXTERNAL


class MalformedProtobuf(ValueError):
    """The bytes are not a well-formed protobuf message; ``offset`` is where reading failed."""

    def __init__(self, offset: int, why: str) -> None:
        super().__init__(f"malformed protobuf at byte {offset}: {why}")
        self.offset = offset


@dataclass(frozen=True)
class ExternalRef:
    """One tensor stored outside the .onnx file."""

    tensor: str
    location: str | None  # None: data_location is EXTERNAL but no location is given
    initializer: bool = False  # a dense initializer of the main graph (what onnxruntime takes from memory)


def _varint(buf: mmap.mmap | bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise MalformedProtobuf(start, "truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise MalformedProtobuf(start, "varint longer than 10 bytes")


def _fields(buf: mmap.mmap | bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field of one message; a varint's
    value is returned as its start and the integer itself in place of the end."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise MalformedProtobuf(pos, "field number 0")
        if wire == 0:
            value, after = _varint(buf, pos, end)
            yield field, wire, pos, value
            pos = after
            continue
        if wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise MalformedProtobuf(pos, f"field {field} runs {pos + length - end} bytes past its message")
            yield field, wire, pos, pos + length
            pos += length
            continue
        size = {1: 8, 5: 4}.get(wire)
        if size is None:
            raise MalformedProtobuf(pos, f"wire type {wire} (groups are not used by ONNX)")
        if pos + size > end:
            raise MalformedProtobuf(pos, "truncated fixed-size field")
        pos += size


def _text(buf: mmap.mmap | bytes, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def _tensor(buf: mmap.mmap | bytes, start: int, end: int, initializer: bool) -> list[ExternalRef]:
    name, locations, external = "", [], False
    for field, wire, a, b in _fields(buf, start, end):
        if field == 8 and wire == 2:
            name = _text(buf, a, b)
        elif field == 14 and wire == 0:
            external = b == _EXTERNAL
        elif field == 13 and wire == 2:  # StringStringEntryProto: key 1, value 2
            entry = {f: _text(buf, s, e) for f, w, s, e in _fields(buf, a, b) if w == 2 and f in (1, 2)}
            if entry.get(1) == "location":
                locations.append(entry.get(2, ""))
    if locations:
        return [ExternalRef(name, location, initializer) for location in locations]
    return [ExternalRef(name, None, initializer)] if external else []


def _walk(
    buf: mmap.mmap | bytes, kind: str, start: int, end: int, depth: int, out: list[ExternalRef], main: bool = False
) -> None:
    """Collect the external tensors under one message; ``main``: it is the model's graph (field 7)."""
    if depth > MAX_DEPTH:
        raise MalformedProtobuf(start, f"subgraphs nested deeper than {MAX_DEPTH}")
    children = _CHILDREN[kind]
    for field, wire, a, b in _fields(buf, start, end):
        child = children.get(field)
        if child is None or wire != 2:
            continue
        if child == "tensor":
            out += _tensor(buf, a, b, initializer=main and field == 5)
        else:
            _walk(buf, child, a, b, depth + (child == "graph"), out, main=kind == "model" and field == 7)


def external_refs(path: str | Path) -> list[ExternalRef]:
    """Every tensor of an ONNX model file that keeps its data in another file.

    Raises MalformedProtobuf when the file is not a well-formed protobuf message (truncated,
    corrupted), OSError when it cannot be read."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise MalformedProtobuf(0, "the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return external_refs_of(buf)


def external_refs_of(data: mmap.mmap | bytes) -> list[ExternalRef]:
    """``external_refs`` of a model already in memory (the bytes that were hashed, and that
    onnxruntime will be given)."""
    if len(data) == 0:
        raise MalformedProtobuf(0, "the file is empty")
    out: list[ExternalRef] = []
    _walk(data, "model", 0, len(data), 0, out)
    return out


STAMP_KEY = "edgeformer.producer"  # metadata_props key of every ONNX file edgeformer writes (its version)


def model_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model file (ModelProto field 14: key 1, value 2).

    Raises MalformedProtobuf for a file that is not a protobuf message, OSError when unreadable."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise MalformedProtobuf(0, "the file is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            props: dict[str, str] = {}
            for field, wire, a, b in _fields(buf, 0, size):
                if field == 14 and wire == 2:
                    entry = {f: _text(buf, s, e) for f, w, s, e in _fields(buf, a, b) if w == 2 and f in (1, 2)}
                    props[entry.get(1, "")] = entry.get(2, "")
            return props
