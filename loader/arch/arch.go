// Package arch holds the architecture hyper-parameters of a model, from GGUF
// metadata or a Hugging Face config.json.
//
// It is pure Go (no cgo): the runtimes (plugin/llama) build on it, and so can
// commands that only describe a model.
package arch

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
)

// HFConfigAsset is the asset name of a Hugging Face config.json.
const HFConfigAsset = "config.json"

// ErrConfig is wrapped by the config readers when hyper-parameters are
// missing or inconsistent.
var ErrConfig = errors.New("llama config")

// Architectures (Config.Arch): the Llama-like decoders nwc runs. They
// share Llama's block (RMSNorm, rotary attention, SwiGLU MLP) and differ in
// the flags of Config: Qwen2 adds q/k/v biases, Qwen3 a per-head RMSNorm of
// q and k before the rotary embedding.
const (
	ArchLlama   = "llama"
	ArchMistral = "mistral"
	ArchQwen2   = "qwen2"
	ArchQwen3   = "qwen3"
)

// Config holds the hyper-parameters of a Llama-like decoder.
type Config struct {
	Arch       string // ArchLlama, ArchMistral, ArchQwen2 or ArchQwen3
	Layers     int
	Hidden     int // model width d
	Heads      int
	KVHeads    int
	HeadDim    int
	FFN        int // MLP inner width
	Vocab      int
	RopeTheta  float64
	RMSEps     float64
	ContextLen int // trained context (0: unknown); informational
	// Tied: the output head is the token embedding (no separate tensor).
	Tied   bool
	Naming Naming
	// QKVBias: the q, k and v projections have biases (Qwen2; Llama with
	// attention_bias).
	QKVBias bool
	// QKNorm: q and k are RMS-normalised per head (weights of head_dim)
	// before the rotary embedding (Qwen3).
	QKNorm bool
	// SlidingWindow is the attention window of every layer (Mistral,
	// Qwen2/3 with use_sliding_window); 0: none. The runtime refuses
	// sequences longer than it (it attends to the whole sequence).
	SlidingWindow int
}

// Validate checks that the numbers are positive and consistent.
func (c Config) Validate() error {
	switch {
	case c.Layers <= 0 || c.Hidden <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.HeadDim <= 0 || c.FFN <= 0 || c.Vocab <= 0:
		return fmt.Errorf("%w: non-positive size in %+v", ErrConfig, c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%w: %d heads not a multiple of %d kv heads", ErrConfig, c.Heads, c.KVHeads)
	case c.HeadDim%2 != 0:
		return fmt.Errorf("%w: odd head_dim %d", ErrConfig, c.HeadDim)
	case c.RopeTheta <= 0 || c.RMSEps <= 0:
		return fmt.Errorf("%w: rope theta %g / rms eps %g must be positive", ErrConfig, c.RopeTheta, c.RMSEps)
	case c.Naming != NamingGGUF && c.Naming != NamingHF:
		return fmt.Errorf("%w: unknown naming %q", ErrConfig, c.Naming)
	case c.SlidingWindow < 0:
		return fmt.Errorf("%w: negative sliding window %d", ErrConfig, c.SlidingWindow)
	}
	return nil
}

// ConfigFromSource reads the config of src: from its GGUF metadata asset
// (gguf-metadata.json, which GGUF files and .nwc files made from them carry),
// else from a Hugging Face config.json asset. Vocab and Tied are checked
// against the tensors.
func ConfigFromSource(src tensor.Source) (Config, error) {
	var cfg Config
	var err error
	found := false
	for _, a := range src.Assets() {
		if a.Name == gguf.MetadataAsset {
			var kvs []gguf.KV
			if kvs, err = gguf.ParseMetadataJSON(a.Data); err != nil {
				return Config{}, fmt.Errorf("arch: %s: %w", a.Name, err)
			}
			cfg, err = ConfigFromGGUF(kvs)
			found = true
			break
		}
	}
	if !found {
		for _, a := range src.Assets() {
			if a.Name == HFConfigAsset {
				cfg, err = ConfigFromHF(a.Data)
				found = true
				break
			}
		}
	}
	if !found {
		return Config{}, fmt.Errorf("%w: the model carries neither %s nor %s", ErrConfig, gguf.MetadataAsset, HFConfigAsset)
	}
	if err != nil {
		return Config{}, err
	}
	return cfg.withTensors(src.Tensors())
}

// withTensors fills Vocab and Tied from the tensor list and checks shapes.
func (c Config) withTensors(infos []tensor.Info) (Config, error) {
	embed := c.Naming.EmbedTensor()
	emb, ok := tensor.Find(infos, embed)
	if !ok {
		return Config{}, fmt.Errorf("%w: no %s tensor", ErrConfig, embed)
	}
	if len(emb.Shape) != 2 || emb.Shape[1] != int64(c.Hidden) {
		return Config{}, fmt.Errorf("%w: %s has shape %v, want [vocab, %d]", ErrConfig, embed, emb.Shape, c.Hidden)
	}
	if c.Vocab != 0 && int64(c.Vocab) != emb.Shape[0] {
		return Config{}, fmt.Errorf("%w: vocab %d but %s has %d rows", ErrConfig, c.Vocab, embed, emb.Shape[0])
	}
	c.Vocab = int(emb.Shape[0])
	_, hasHead := tensor.Find(infos, c.Naming.HeadTensor())
	c.Tied = !hasHead
	// Biases present though the config does not say so (a Llama exported
	// without attention_bias): use them.
	if _, ok := tensor.Find(infos, c.Naming.LayerBias(0, "attn_q")); ok {
		c.QKVBias = true
	}
	return c, c.Validate()
}

// ConfigFromGGUF reads llama.* metadata.
func ConfigFromGGUF(kvs []gguf.KV) (Config, error) {
	m := make(map[string]gguf.Value, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	arch := "llama"
	if v, ok := m["general.architecture"]; ok {
		if s, ok := v.Str(); ok {
			arch = s
		}
	}
	if arch != "llama" {
		return Config{}, fmt.Errorf("%w: architecture %q is not llama", ErrConfig, arch)
	}
	var missing []string
	geti := func(key string, def int) int {
		v, ok := m[arch+"."+key]
		if !ok {
			if def < 0 {
				missing = append(missing, arch+"."+key)
			}
			return def
		}
		if u, ok := v.Uint(); ok {
			return int(u)
		}
		if i, ok := v.Int(); ok {
			return int(i)
		}
		missing = append(missing, arch+"."+key+" (not an integer)")
		return def
	}
	getf := func(key string, def float64) float64 {
		v, ok := m[arch+"."+key]
		if !ok {
			return def
		}
		if f, ok := v.Float(); ok {
			return f
		}
		missing = append(missing, arch+"."+key+" (not a float)")
		return def
	}
	c := Config{Arch: arch, Naming: NamingGGUF}
	c.Layers = geti("block_count", -1)
	c.Hidden = geti("embedding_length", -1)
	c.FFN = geti("feed_forward_length", -1)
	c.Heads = geti("attention.head_count", -1)
	c.KVHeads = geti("attention.head_count_kv", c.Heads)
	c.ContextLen = geti("context_length", 0)
	c.Vocab = geti("vocab_size", 0)
	c.RopeTheta = getf("rope.freq_base", 10000)
	c.RMSEps = getf("attention.layer_norm_rms_epsilon", 1e-5)
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("%w: GGUF metadata lacks %s", ErrConfig, strings.Join(missing, ", "))
	}
	c.HeadDim = geti("attention.key_length", 0)
	if c.HeadDim == 0 && c.Heads > 0 {
		c.HeadDim = c.Hidden / c.Heads
	}
	if rd := geti("rope.dimension_count", c.HeadDim); rd != c.HeadDim {
		return Config{}, fmt.Errorf("%w: partial rotary (rope.dimension_count %d < head_dim %d) is not supported", ErrConfig, rd, c.HeadDim)
	}
	if v, ok := m[arch+".rope.scaling.type"]; ok {
		if s, _ := v.Str(); s != "" && s != "none" {
			return Config{}, fmt.Errorf("%w: rope scaling %q is not supported", ErrConfig, s)
		}
	}
	return c, nil
}

// hfConfig is the subset of a Hugging Face config.json (LlamaConfig,
// MistralConfig, Qwen2Config, Qwen3Config) that nwc reads.
type hfConfig struct {
	ModelType        string          `json:"model_type"`
	Architectures    []string        `json:"architectures"`
	HiddenSize       int             `json:"hidden_size"`
	Intermediate     int             `json:"intermediate_size"`
	Layers           int             `json:"num_hidden_layers"`
	Heads            int             `json:"num_attention_heads"`
	KVHeads          int             `json:"num_key_value_heads"`
	HeadDim          int             `json:"head_dim"`
	VocabSize        int             `json:"vocab_size"`
	RMSEps           float64         `json:"rms_norm_eps"`
	RopeTheta        float64         `json:"rope_theta"`
	MaxPos           int             `json:"max_position_embeddings"`
	TieWordEmbedding *bool           `json:"tie_word_embeddings"`
	RopeScaling      json.RawMessage `json:"rope_scaling"`
	HiddenAct        string          `json:"hidden_act"`
	AttentionBias    *bool           `json:"attention_bias"`
	SlidingWindow    *int            `json:"sliding_window"`
	UseSlidingWindow *bool           `json:"use_sliding_window"`
}

// hfArchitectures maps the model classes of config.json's architectures to
// their model_type, for a config without model_type.
var hfArchitectures = map[string]string{
	"LlamaForCausalLM":   ArchLlama,
	"MistralForCausalLM": ArchMistral,
	"Qwen2ForCausalLM":   ArchQwen2,
	"Qwen3ForCausalLM":   ArchQwen3,
}

// ConfigFromHF reads a Hugging Face config.json of a Llama, Mistral, Qwen2
// or Qwen3 model (model_type, else the architectures entry); any other
// model_type is refused by name.
func ConfigFromHF(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("%w: config.json: %w", ErrConfig, err)
	}
	mt := h.ModelType
	if mt == "" && len(h.Architectures) > 0 {
		mt = hfArchitectures[h.Architectures[0]]
		if mt == "" {
			return Config{}, fmt.Errorf("%w: config.json architecture %q is not supported (llama, mistral, qwen2, qwen3)", ErrConfig, h.Architectures[0])
		}
	}
	switch mt {
	case ArchLlama, ArchMistral, ArchQwen2, ArchQwen3:
	default:
		return Config{}, fmt.Errorf("%w: config.json model_type %q is not supported (llama, mistral, qwen2, qwen3)", ErrConfig, mt)
	}
	if h.HiddenAct != "" && h.HiddenAct != "silu" {
		return Config{}, fmt.Errorf("%w: %s hidden_act %q is not supported (silu only)", ErrConfig, mt, h.HiddenAct)
	}
	if s := strings.TrimSpace(string(h.RopeScaling)); s != "" && s != "null" {
		return Config{}, fmt.Errorf("%w: %s rope_scaling %s is not supported", ErrConfig, mt, s)
	}
	c := Config{
		Arch: mt, Naming: NamingHF,
		Layers: h.Layers, Hidden: h.HiddenSize, FFN: h.Intermediate,
		Heads: h.Heads, KVHeads: h.KVHeads, HeadDim: h.HeadDim, Vocab: h.VocabSize,
		RMSEps: h.RMSEps, RopeTheta: h.RopeTheta, ContextLen: h.MaxPos,
		QKVBias: mt == ArchQwen2 || (h.AttentionBias != nil && *h.AttentionBias),
		QKNorm:  mt == ArchQwen3,
	}
	// Mistral's sliding_window applies whenever it is set; Qwen2/3's only
	// with use_sliding_window (their configs carry a window they ignore).
	if h.SlidingWindow != nil && *h.SlidingWindow > 0 &&
		(mt == ArchMistral || ((mt == ArchQwen2 || mt == ArchQwen3) && h.UseSlidingWindow != nil && *h.UseSlidingWindow)) {
		c.SlidingWindow = *h.SlidingWindow
	}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if c.HeadDim == 0 && c.Heads > 0 {
		c.HeadDim = c.Hidden / c.Heads
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if c.RMSEps == 0 {
		c.RMSEps = 1e-6
	}
	return c, nil
}
