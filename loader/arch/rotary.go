package arch

// PermuteQK re-orders the rows of an attn_q / attn_k weight w [out, in]
// (row-major) per head between llama.cpp's order and Hugging Face's.
// llama.cpp's converter permutes these rows for ggml's rotary embedding,
// which rotates adjacent pairs: per head of out/heads rows, GGUF row 2j+i
// (i in {0,1}, j < head_dim/2) is Hugging Face row i*head_dim/2 + j
// (rotate-half). toHF un-permutes (GGUF -> HF); otherwise it permutes
// (HF -> GGUF). heads is the query head count for attn_q and the key/value
// head count for attn_k. It returns a new slice.
func PermuteQK(w []float32, out, in, heads int, toHF bool) []float32 {
	hd := out / heads
	half := hd / 2
	res := make([]float32, len(w))
	for h := 0; h < heads; h++ {
		for i := 0; i < 2; i++ {
			for j := 0; j < half; j++ {
				hf := h*hd + i*half + j
				gg := h*hd + 2*j + i
				dst, src := gg, hf
				if toHF {
					dst, src = hf, gg
				}
				copy(res[dst*in:(dst+1)*in], w[src*in:(src+1)*in])
			}
		}
	}
	return res
}
