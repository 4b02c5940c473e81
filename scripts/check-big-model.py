#!/usr/bin/env python3
"""Write a random Llama GGUF whose float32 weights exceed 3 GB (for
scripts/check-big-model.sh: nwc's runtime has no 2 GB ONNX protobuf ceiling).

Shapes (default): hidden 2048, 14 layers, FFN 5632, 32 heads / 4 kv heads
(head_dim 64), vocab 49152 (SmolLM2's tokenizer, copied from the reference
GGUF so that `nwc generate` can tokenize), untied output head:
818M parameters, 3.27 GB as float32 (3.05 GiB).

Tensors are written one at a time (memory: one tensor), F32, N(0, 0.02)
with unit norm weights, from a fixed seed.

usage: check-big-model.py --tokenizer-from REF.gguf --out big.gguf [--layers N]
"""
import argparse
import sys

import numpy as np
import gguf


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer-from", required=True, help="GGUF whose tokenizer.* metadata is copied")
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=14)
    ap.add_argument("--ffn", type=int, default=5632)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    ref = gguf.GGUFReader(a.tokenizer_from)
    tok_fields = [f for name, f in ref.fields.items() if name.startswith("tokenizer.")]
    vocab = len(ref.fields["tokenizer.ggml.tokens"].data)
    D, L, F, H, KV = a.hidden, a.layers, a.ffn, a.heads, a.kv_heads
    hd = D // H

    tensors = [("token_embd.weight", (vocab, D))]
    for l in range(L):
        p = f"blk.{l}."
        tensors += [
            (p + "attn_norm.weight", (D,)),
            (p + "attn_q.weight", (H * hd, D)),
            (p + "attn_k.weight", (KV * hd, D)),
            (p + "attn_v.weight", (KV * hd, D)),
            (p + "attn_output.weight", (D, H * hd)),
            (p + "ffn_norm.weight", (D,)),
            (p + "ffn_gate.weight", (F, D)),
            (p + "ffn_up.weight", (F, D)),
            (p + "ffn_down.weight", (D, F)),
        ]
    tensors += [("output_norm.weight", (D,)), ("output.weight", (vocab, D))]
    params = sum(int(np.prod(s)) for _, s in tensors)

    w = gguf.GGUFWriter(a.out, "llama")
    w.add_name("nwc-random-llama-big")
    w.add_block_count(L)
    w.add_context_length(2048)
    w.add_embedding_length(D)
    w.add_feed_forward_length(F)
    w.add_head_count(H)
    w.add_head_count_kv(KV)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    for f in tok_fields:
        vtype = f.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            w.add_key_value(f.name, f.contents(), vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(f.name, f.contents(), vtype)
    for name, shape in tensors:
        # GGUF dims are reversed; add_tensor_info takes the numpy shape.
        w.add_tensor_info(name, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    for name, shape in tensors:
        if len(shape) == 1:
            t = np.ones(shape, dtype=np.float32)
        else:
            t = rng.standard_normal(shape, dtype=np.float32)
            t *= np.float32(0.02)
        w.write_tensor_data(t)
        del t
    w.close()
    print(f"wrote {a.out}: hidden {D}, {L} layers, ffn {F}, heads {H}/{KV}, vocab {vocab}, "
          f"{params/1e6:.1f}M parameters, {params*4/1e9:.2f} GB float32 ({params*4/2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
