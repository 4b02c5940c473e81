#!/usr/bin/env python3
"""Builds the ONNX test models of loader/onnxinit/testdata.

    python3 -m venv /tmp/st && /tmp/st/bin/pip install onnx numpy
    /tmp/st/bin/python scripts/make_tiny_onnx.py loader/onnxinit/testdata

Writes tiny.onnx (initializers in raw_data and in the typed repeated fields
float_data, int32_data, int64_data, double_data), tiny_ext.onnx with
tiny_ext.data (the raw_data tensors moved to an external file) and
tiny_expected.json: for each initializer its dtype, shape and stored bytes
(little endian, hex) as the Go reader must return them.
"""
import json
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tensors():
    out = []
    # raw_data (numpy_helper.from_array always uses raw_data)
    out.append(numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3) / 4 - 0.5, "w"))
    out.append(numpy_helper.from_array(np.array([1.5, -2, 65504, 6e-8], dtype=np.float16), "h_raw"))
    out.append(numpy_helper.from_array(np.array([0, 7, 255], dtype=np.uint8), "u8_raw"))
    out.append(numpy_helper.from_array(np.zeros((0, 3), dtype=np.float32), "empty"))
    # typed repeated fields (raw=False)
    out.append(helper.make_tensor("b", TensorProto.FLOAT, [3], [0.1, -0.2, 3e38], raw=False))
    out.append(helper.make_tensor("scalar", TensorProto.FLOAT, [], [42.0], raw=False))
    out.append(helper.make_tensor("h_typed", TensorProto.FLOAT16, [2, 2], np.array([1, -1, 0.5, 1024], dtype=np.float16), raw=False))
    out.append(helper.make_tensor("bf_typed", TensorProto.BFLOAT16, [3], [1.0, -3.5, 0.125], raw=False))
    out.append(helper.make_tensor("i64", TensorProto.INT64, [3], [1, -1, 2**40], raw=False))
    out.append(helper.make_tensor("i32", TensorProto.INT32, [2], [-(2**31), 2**31 - 1], raw=False))
    out.append(helper.make_tensor("i16", TensorProto.INT16, [2], [-32768, 123], raw=False))
    out.append(helper.make_tensor("i8", TensorProto.INT8, [4], [-128, -1, 0, 127], raw=False))
    out.append(helper.make_tensor("u8", TensorProto.UINT8, [2], [0, 255], raw=False))
    out.append(helper.make_tensor("mask", TensorProto.BOOL, [3], [True, False, True], raw=False))
    out.append(helper.make_tensor("d", TensorProto.DOUBLE, [2], [3.141592653589793, -1e300], raw=False))
    return out


def model(inits):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", "b"], ["y"]),
    ]
    g = helper.make_graph(nodes, "tiny", [x], [y], initializer=inits)
    m = helper.make_model(g, producer_name="make_tiny_onnx", opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    helper.set_model_props(m, {"purpose": "nwc test"})
    onnx.checker.check_model(m)
    return m


def stored_bytes(t):
    a = numpy_helper.to_array(t)
    if t.data_type == TensorProto.BFLOAT16:
        # numpy has no bfloat16: to_array returns float32; keep the top half.
        a = (np.asarray(a, dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
    return a.astype(a.dtype.newbyteorder("<")).tobytes()


def main(outdir):
    os.makedirs(outdir, exist_ok=True)
    inits = tensors()
    names = {1: "F32", 2: "U8", 3: "I8", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16", 11: "F64", 16: "BF16"}
    expected = [
        {"name": t.name, "dtype": names[t.data_type], "shape": list(t.dims), "hex": stored_bytes(t).hex(),
         "raw": t.HasField("raw_data")}
        for t in inits
    ]
    onnx.save_model(model(inits), os.path.join(outdir, "tiny.onnx"))
    onnx.save_model(model(tensors()), os.path.join(outdir, "tiny_ext.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="tiny_ext.data", size_threshold=0)
    with open(os.path.join(outdir, "tiny_expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "loader/onnxinit/testdata")
