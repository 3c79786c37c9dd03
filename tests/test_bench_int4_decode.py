"""bench/int4_decode.py's accounting (the run itself exports three bundles: too slow for CI; the lead runs it):
the weight bytes a decoding step reads and the bandwidth a numpy copy measures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import int4_decode  # noqa: E402


def test_weight_bytes_per_token_leave_out_tables_only_gathered():
    tables = {
        "wpe": np.zeros((32, 8), np.float32),  # position rows: one row per token
        "w": np.zeros((8, 8), np.float32),  # a MatMul weight: read in full
        "b_q4": np.zeros((50, 1, 16), np.uint8),  # the head's table, also the embedding's: read in full once
    }
    nodes = [
        helper.make_node("Gather", ["wpe", "pos"], ["p"]),
        helper.make_node("MatMul", ["p", "w"], ["h"]),
        helper.make_node("GatherBlockQuantized", ["b_q4", "ids", "s"], ["e"], domain="com.microsoft"),
        helper.make_node("MatMulNBits", ["h", "b_q4", "s"], ["y"], domain="com.microsoft"),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in tables.items()]
    inits.append(numpy_helper.from_array(np.zeros((50, 1), np.float32), "s"))  # scales: read by both
    graph = helper.make_graph(nodes, "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    assert int4_decode.weight_bytes_per_token(graph) == 8 * 8 * 4 + 50 * 16 + 50 * 4


def test_memory_bandwidth_is_bytes_per_second_of_a_copy():
    measured = int4_decode.memory_bandwidth(megabytes=8, repeats=2)
    assert 1e8 < measured < 1e13  # between 0.1 GB/s and 10 TB/s: a number of the right kind, not a speed claim
