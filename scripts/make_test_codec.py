#!/usr/bin/env python3
"""Writes the tiny test codec ortcodec/testdata/tinycodec/ (committed).

A codec folder per models/README.md, small enough to commit (a few KB):

  encoder.onnx   x [N,16] f32, q [N] i64 -> y [N,16] f32
  decoder.onnx   y_hat [N,16] f32, q [N] i64 -> x_hat [N,16] f32
  entropy.json   nwc-cdf-v1, 16 channels, precision 16
  card.json      model card
  expected.json  inputs and reference outputs computed with numpy (float64)

Both networks are  out = Gemm(Relu(Gemm(in, W1, b1)) * Gather(E, q), W2, b2)
with width 8, which exercises the ops the real codec uses (Gemm, Relu, Mul,
Gather) and the dynamic batch dimension N. Deterministic (fixed seed).

Needs only `onnx` and `numpy` (no torch):
  python3 -m venv /tmp/onnxv && /tmp/onnxv/bin/pip install onnx numpy
  /tmp/onnxv/bin/python scripts/make_test_codec.py
"""
import json
import math
import os
import struct
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

D, W, LEVELS = 16, 8, 4
OPSET, IR_VERSION = 17, 9  # loadable by ONNX Runtime >= 1.16
PRECISION = 16


def mlp(name, in_name, out_name, rng):
    w1 = (rng.standard_normal((D, W)) / math.sqrt(D)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(W)).astype(np.float32)
    emb = (1.0 + 0.25 * rng.standard_normal((LEVELS, W))).astype(np.float32)
    w2 = (rng.standard_normal((W, D)) / math.sqrt(W)).astype(np.float32)
    b2 = (0.1 * rng.standard_normal(D)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(b1, "b1"),
        numpy_helper.from_array(emb, "emb"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", [in_name, "w1", "b1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h1"]),
        helper.make_node("Gather", ["emb", "q"], ["e"], axis=0),
        helper.make_node("Mul", ["h1", "e"], ["h2"]),
        helper.make_node("Gemm", ["h2", "w2", "b2"], [out_name]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [
            helper.make_tensor_value_info(in_name, TensorProto.FLOAT, ["N", D]),
            helper.make_tensor_value_info("q", TensorProto.INT64, ["N"]),
        ],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["N", D])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="nwc scripts/make_test_codec.py",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)

    def ref(x, q):
        h = np.maximum(x.astype(np.float64) @ w1 + b1, 0.0)
        h = h * emb[q].astype(np.float64)
        return h @ w2.astype(np.float64) + b2

    return model, ref


def laplace_cdf(scale, offset, length):
    """Integer CDF (length+2 entries) of a discretized Laplace plus tail."""
    total = 1 << PRECISION
    vals = np.arange(offset, offset + length, dtype=np.float64)
    pmf = np.exp(-np.abs(vals) / scale)
    pmf = np.append(pmf, pmf.sum() * 1e-3)  # escape
    freq = np.maximum(1, np.round(pmf / pmf.sum() * total)).astype(np.int64)
    freq[np.argmax(freq)] += total - freq.sum()
    assert freq.min() >= 1 and freq.sum() == total
    return [0] + np.cumsum(freq).tolist()


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "ortcodec", "testdata", "tinycodec")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20251016)
    enc, enc_ref = mlp("nwc_tiny_encoder", "x", "y", rng)
    dec, dec_ref = mlp("nwc_tiny_decoder", "y_hat", "x_hat", rng)
    onnx.save(enc, os.path.join(out, "encoder.onnx"))
    onnx.save(dec, os.path.join(out, "decoder.onnx"))

    channels = []
    for c in range(D):
        median = np.float32(0.05 * (c - 8))
        length = 9 + 2 * (c % 4)
        offset = -(length // 2)
        channels.append({
            "median_f32_bits": struct.unpack("<I", median.tobytes())[0],
            "offset": offset,
            "cdf": laplace_cdf(0.6 + 0.1 * c, offset, length),
        })
    with open(os.path.join(out, "entropy.json"), "w") as f:
        json.dump({"format": "nwc-cdf-v1", "precision": PRECISION, "channels": channels}, f)
        f.write("\n")

    card = {
        "name": "tinycodec",
        "purpose": "test fixture only: random weights, not a trained codec",
        "architecture": {"width": W, "blocks": 0, "d": D, "levels": LEVELS},
        "training": None,
        "lambda": None,
        "command": "python3 scripts/make_test_codec.py",
    }
    with open(os.path.join(out, "card.json"), "w") as f:
        json.dump(card, f, indent=1)
        f.write("\n")

    n = 7
    x = rng.standard_normal((n, D)).astype(np.float32)
    q = np.array([0, 1, 2, 3, 0, 2, 1], dtype=np.int64)
    y = enc_ref(x, q)
    y_hat = np.round(y).astype(np.float32)
    x_hat = dec_ref(y_hat, q)
    exp = {
        "n": n,
        "x": x.ravel().tolist(),
        "q": q.tolist(),
        "y": y.ravel().tolist(),
        "y_hat": y_hat.ravel().tolist(),
        "x_hat": x_hat.ravel().tolist(),
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(exp, f)
        f.write("\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
