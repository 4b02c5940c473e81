//go:build cgo

package llama

import (
	"context"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/tensor"
)

// tensorNames maps the parts of the model to checkpoint tensor names.
type tensorNames struct {
	embed, norm, head string
	layer             func(i int, part string) string
	bias              func(i int, part string) string
}

// readOrder is the order Build reads the weights of a model with config c
// in (the prefetch order for loader.Prefetch): embedding, each layer's parts
// as Build uses them (Qwen3's q/k norms and Qwen2's biases after the
// attention matrices, Gemma's post-attention norm after them), final norm,
// output head (absent when tied; Prefetch skips unknown names).
func (n tensorNames) readOrder(c arch.Config) []string {
	order := []string{n.embed}
	for l := 0; l < c.Layers; l++ {
		for _, p := range []string{partAttnNorm, partQ, partK, partV, partO} {
			order = append(order, n.layer(l, p))
		}
		if c.QKNorm {
			order = append(order, n.layer(l, partQNorm), n.layer(l, partKNorm))
		}
		if c.QKVBias {
			order = append(order, n.bias(l, partQ), n.bias(l, partK), n.bias(l, partV))
		}
		if c.PostNorms {
			order = append(order, n.layer(l, partPostAttnNorm))
		}
		for _, p := range []string{partFFNNorm, partGate, partUp, partDown} {
			order = append(order, n.layer(l, p))
		}
		if c.PostNorms {
			order = append(order, n.layer(l, partPostFFNNorm))
		}
	}
	return append(order, n.norm, n.head)
}

// Layer parts, named as in GGUF (arch.Naming.LayerTensor maps them).
const (
	partAttnNorm = "attn_norm"
	partQ        = "attn_q"
	partK        = "attn_k"
	partV        = "attn_v"
	partO        = "attn_output"
	partFFNNorm  = "ffn_norm"
	partGate     = "ffn_gate"
	partUp       = "ffn_up"
	partDown     = "ffn_down"
	// Qwen3's and Gemma-3's per-head q/k norms.
	partQNorm = "attn_q_norm"
	partKNorm = "attn_k_norm"
	// Gemma's norms of the attention and MLP outputs (Config.PostNorms);
	// its ffn_norm is the norm before the MLP, as Llama's.
	partPostAttnNorm = "post_attention_norm"
	partPostFFNNorm  = "post_ffw_norm"
)

func names(c arch.Config) tensorNames {
	n := c.Naming
	return tensorNames{
		embed: n.EmbedTensor(), norm: n.NormTensor(), head: n.HeadTensor(),
		layer: c.LayerTensor, bias: n.LayerBias,
	}
}

// transposedReads is the set of weights Build reads as their float32
// transpose (tensor.ReadFloat32T: the graph wants Wᵀ, and the nwc decoder
// writes it directly): every block linear except permuted attn_q/attn_k
// (arch.Config.PermutedQK: GGUF but Gemma-3), whose rows are un-permuted
// first.
func (n tensorNames) transposedReads(c arch.Config) func(string) bool {
	set := map[string]bool{}
	for l := 0; l < c.Layers; l++ {
		for _, p := range []string{partQ, partK, partV, partO, partGate, partUp, partDown} {
			if c.PermutedQK() && (p == partQ || p == partK) {
				continue
			}
			set[n.layer(l, p)] = true
		}
	}
	return func(name string) bool { return set[name] }
}

// prefetch wraps src in the prefetcher Build wants: its read order, and the
// weights it reads transposed prefetched as Wᵀ.
func prefetch(src tensor.Source, cfg arch.Config) *loader.Prefetcher {
	n := names(cfg)
	return loader.Prefetch(context.Background(), src, false, loader.PrefetchOptions{
		Order: n.readOrder(cfg), Transposed: n.transposedReads(cfg)})
}
