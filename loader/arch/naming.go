package arch

import "fmt"

// Naming tells which tensor names (and q/k row layout) a checkpoint uses.
type Naming string

const (
	// NamingGGUF: llama.cpp names (token_embd.weight, blk.N.attn_q.weight,
	// ...), attn_q/attn_k rows permuted for ggml's rotary embedding.
	NamingGGUF Naming = "gguf"
	// NamingHF: Hugging Face names (model.embed_tokens.weight,
	// model.layers.N.self_attn.q_proj.weight, ...), rows as trained.
	NamingHF Naming = "hf"
)

// EmbedTensor is the name of the token embedding.
func (n Naming) EmbedTensor() string {
	if n == NamingHF {
		return "model.embed_tokens.weight"
	}
	return "token_embd.weight"
}

// NormTensor is the name of the final norm weight.
func (n Naming) NormTensor() string {
	if n == NamingHF {
		return "model.norm.weight"
	}
	return "output_norm.weight"
}

// HeadTensor is the name of the output head (absent when it is tied to the
// embedding).
func (n Naming) HeadTensor() string {
	if n == NamingHF {
		return "lm_head.weight"
	}
	return "output.weight"
}

// hfParts maps GGUF layer part names to Hugging Face ones.
var hfParts = map[string]string{
	"attn_norm":   "input_layernorm",
	"attn_q":      "self_attn.q_proj",
	"attn_k":      "self_attn.k_proj",
	"attn_v":      "self_attn.v_proj",
	"attn_output": "self_attn.o_proj",
	"ffn_norm":    "post_attention_layernorm",
	"ffn_gate":    "mlp.gate_proj",
	"ffn_up":      "mlp.up_proj",
	"ffn_down":    "mlp.down_proj",
	"attn_q_norm": "self_attn.q_norm",
	"attn_k_norm": "self_attn.k_norm",
	// Gemma's sandwich norms (its ffn_norm is hfGemmaFFNNorm).
	"post_attention_norm": "post_attention_layernorm",
	"post_ffw_norm":       "post_feedforward_layernorm",
}

// hfGemmaFFNNorm is Gemma's Hugging Face name of the GGUF part ffn_norm
// (the norm before the MLP; Llama's post_attention_layernorm is Gemma's
// norm of the attention output, GGUF post_attention_norm).
const hfGemmaFFNNorm = "pre_feedforward_layernorm"

// LayerTensor is the name of the weight of part of layer i in c's naming
// and architecture: Naming.LayerTensor, except Gemma-3's Hugging Face
// ffn_norm (pre_feedforward_layernorm).
func (c Config) LayerTensor(i int, part string) string {
	if c.Naming == NamingHF && c.Arch == ArchGemma3 && part == "ffn_norm" {
		return fmt.Sprintf("model.layers.%d.%s.weight", i, hfGemmaFFNNorm)
	}
	return c.Naming.LayerTensor(i, part)
}

// LayerTensor is the name of the weight of part of layer i; part is the
// GGUF part name (attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
// ffn_gate, ffn_up, ffn_down; Qwen3's attn_q_norm, attn_k_norm; Gemma's
// post_attention_norm, post_ffw_norm) with Llama's meaning of ffn_norm
// (Config.LayerTensor knows Gemma's).
func (n Naming) LayerTensor(i int, part string) string {
	return n.layerName(i, part, "weight")
}

// LayerBias is the name of the bias of part of layer i (Qwen2's attn_q,
// attn_k, attn_v).
func (n Naming) LayerBias(i int, part string) string {
	return n.layerName(i, part, "bias")
}

func (n Naming) layerName(i int, part, kind string) string {
	if n == NamingHF {
		return fmt.Sprintf("model.layers.%d.%s.%s", i, hfParts[part], kind)
	}
	return fmt.Sprintf("blk.%d.%s.%s", i, part, kind)
}
