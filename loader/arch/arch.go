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
	"math"
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
// share Llama's block (RMSNorm, rotary attention, gated MLP) and differ in
// the flags of Config: Qwen2 adds q/k/v biases, Qwen3 a per-head RMSNorm of
// q and k before the rotary embedding; Gemma-3 (text) adds that q/k norm,
// norms after attention and MLP (sandwich), a scaled embedding, GeGLU,
// its own attention scale and interleaved sliding-window and global layers
// with their own rotary bases.
const (
	ArchLlama   = "llama"
	ArchMistral = "mistral"
	ArchQwen2   = "qwen2"
	ArchQwen3   = "qwen3"
	ArchGemma3  = "gemma3"
)

// MLP activations (Config.Act).
const (
	// ActSiLU: SwiGLU, SiLU(gate) * up (Llama, Mistral, Qwen).
	ActSiLU = "silu"
	// ActGELUTanh: GeGLU with the tanh approximation of GELU (Gemma's
	// gelu_pytorch_tanh).
	ActGELUTanh = "gelu_tanh"
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
	// SlidingWindow is the attention window (Mistral, Qwen2/3 with
	// use_sliding_window, Gemma-3's sliding layers): query i sees key j iff
	// 0 <= i-j < SlidingWindow; 0: none. With SlidingPattern 0 it is every
	// layer's window and the runtime refuses sequences longer than it (it
	// does not mask).
	SlidingWindow int
	// SlidingPattern, when > 0, makes layer i a global (full attention)
	// layer iff (i+1) % SlidingPattern == 0 and the others sliding-window
	// layers, which the runtime masks (any sequence length): Gemma-3's 6
	// (five sliding layers, then a global one). See IsSliding.
	SlidingPattern int

	// Gemma-3 (zero values: Llama's behaviour).

	// Act is the MLP activation: ActSiLU ("" too) or ActGELUTanh.
	Act string
	// AttnScale multiplies q·k (0: 1/sqrt(HeadDim)); Gemma-3:
	// query_pre_attn_scalar^-0.5.
	AttnScale float64
	// EmbedScale multiplies the token embeddings at the input (not the tied
	// head); 0: none. Gemma: sqrt(Hidden) in float32.
	EmbedScale float64
	// NormShift is added to every RMSNorm weight as read (Gemma's
	// Hugging Face checkpoints store w-1: the norm multiplies by 1+w;
	// llama.cpp's converter stores w+1 already, so GGUF naming has 0).
	NormShift float64
	// PostNorms: the attention output and the MLP output are RMS-normalised
	// before their residual adds (Gemma's post_attention_layernorm and
	// post_feedforward_layernorm; GGUF post_attention_norm, post_ffw_norm).
	PostNorms bool
	// RopeLocalTheta is the rotary base of the sliding-window layers when
	// SlidingPattern > 0 (Gemma-3: rope_local_base_freq, 10000); 0:
	// RopeTheta.
	RopeLocalTheta float64
	// RopeScale is the linear rotary scaling factor of the global layers
	// (positions divided by it; Gemma-3 4B and up: 8); 0 or 1: none.
	RopeScale float64
}

// IsSliding reports whether layer l attends within SlidingWindow only.
func (c Config) IsSliding(l int) bool {
	if c.SlidingWindow <= 0 {
		return false
	}
	return c.SlidingPattern <= 0 || (l+1)%c.SlidingPattern != 0
}

// MasksWindow reports whether the runtime masks the sliding window (any
// sequence length) rather than refusing sequences longer than it.
func (c Config) MasksWindow() bool { return c.SlidingPattern > 0 }

// RopeBase is the rotary base of layer l.
func (c Config) RopeBase(l int) float64 {
	if c.MasksWindow() && c.IsSliding(l) && c.RopeLocalTheta > 0 {
		return c.RopeLocalTheta
	}
	return c.RopeTheta
}

// RopeFactor is the linear rotary scaling factor of layer l (1: none):
// the global layers' RopeScale.
func (c Config) RopeFactor(l int) float64 {
	if c.RopeScale > 0 && !c.IsSliding(l) {
		return c.RopeScale
	}
	return 1
}

// PermutedQK reports whether the checkpoint's attn_q / attn_k rows are in
// llama.cpp's permuted order (GGUF naming; not for Gemma-3, whose
// converter stores them as trained).
func (c Config) PermutedQK() bool {
	return c.Naming == NamingGGUF && c.Arch != ArchGemma3
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
	case c.SlidingWindow < 0 || c.SlidingPattern < 0:
		return fmt.Errorf("%w: negative sliding window %d or pattern %d", ErrConfig, c.SlidingWindow, c.SlidingPattern)
	case c.Act != "" && c.Act != ActSiLU && c.Act != ActGELUTanh:
		return fmt.Errorf("%w: unknown MLP activation %q", ErrConfig, c.Act)
	case c.AttnScale < 0 || c.EmbedScale < 0 || c.RopeLocalTheta < 0 || c.RopeScale < 0 ||
		math.IsNaN(c.AttnScale+c.EmbedScale+c.NormShift+c.RopeLocalTheta+c.RopeScale) || math.IsInf(c.AttnScale+c.EmbedScale+c.NormShift+c.RopeLocalTheta+c.RopeScale, 0):
		return fmt.Errorf("%w: attention scale %g, embedding scale %g, norm shift %g, local rope theta %g, rope scale %g must be finite and not negative",
			ErrConfig, c.AttnScale, c.EmbedScale, c.NormShift, c.RopeLocalTheta, c.RopeScale)
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
		for _, ti := range infos {
			if strings.Contains(ti.Name, "language_model.") {
				// Gemma3ForConditionalGeneration and the like.
				return Config{}, fmt.Errorf("%w: no %s tensor: a multimodal checkpoint (%s) is not supported, only its text model's names (model.layers.N...)", ErrConfig, embed, ti.Name)
			}
		}
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

// ConfigFromGGUF reads llama.* or gemma3.* metadata (general.architecture
// llama or gemma3; any other is refused by name).
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
	if arch != ArchLlama && arch != ArchGemma3 {
		return Config{}, fmt.Errorf("%w: GGUF architecture %q is not supported (llama, gemma3)", ErrConfig, arch)
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
		if u, ok := v.Uint(); ok && u <= math.MaxInt32 {
			return int(u)
		}
		if i, ok := v.Int(); ok && i >= math.MinInt32 && i <= math.MaxInt32 {
			return int(i)
		}
		missing = append(missing, arch+"."+key+" (not an integer in range)")
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
	if arch == ArchGemma3 {
		c.SlidingWindow = geti("attention.sliding_window", -1)
	}
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
	scaling := ""
	if v, ok := m[arch+".rope.scaling.type"]; ok {
		scaling, _ = v.Str()
	}
	if arch == ArchGemma3 {
		if err := c.gemma3FromGGUF(geti, getf, scaling); err != nil {
			return Config{}, err
		}
		if len(missing) > 0 {
			return Config{}, fmt.Errorf("%w: GGUF metadata: %s", ErrConfig, strings.Join(missing, ", "))
		}
		return c, nil
	}
	if scaling != "" && scaling != "none" {
		return Config{}, fmt.Errorf("%w: rope scaling %q is not supported", ErrConfig, scaling)
	}
	return c, nil
}

// gemma3FromGGUF completes a gemma3 config from its metadata as llama.cpp
// (src/llama-model.cpp, LLM_ARCH_GEMMA3) reads it: sliding-window pattern 6,
// rotary base 10000 on the sliding layers, rope.freq_base and the linear
// rope.scaling.factor on the global ones, attention scale
// 1/sqrt(key_length) (1/sqrt(embedding_length/head_count) for the 62-layer
// 27B), embeddings times sqrtf(embedding_length). The converter stores the
// norm weights with Gemma's +1 already added and attn_q/attn_k unpermuted.
func (c *Config) gemma3FromGGUF(geti func(string, int) int, getf func(string, float64) float64, scaling string) error {
	if vl := geti("attention.value_length", c.HeadDim); vl != c.HeadDim {
		return fmt.Errorf("%w: gemma3 value_length %d differs from key_length %d", ErrConfig, vl, c.HeadDim)
	}
	if c.SlidingWindow <= 0 {
		return fmt.Errorf("%w: gemma3 attention.sliding_window %d must be positive", ErrConfig, c.SlidingWindow)
	}
	for _, k := range []string{"attn_logit_softcapping", "final_logit_softcapping"} {
		if v := getf(k, 0); v != 0 {
			return fmt.Errorf("%w: gemma3 %s %g is not supported", ErrConfig, k, v)
		}
	}
	switch scaling {
	case "", "none":
	case "linear":
		f := getf("rope.scaling.factor", 0)
		if f == 0 {
			f = getf("rope.scale_linear", 0)
		}
		if f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: gemma3 rope.scaling.factor %g", ErrConfig, f)
		}
		c.RopeScale = f
	default:
		return fmt.Errorf("%w: gemma3 rope scaling %q is not supported (linear only)", ErrConfig, scaling)
	}
	c.SlidingPattern = 6
	c.RopeLocalTheta = 10000
	c.QKNorm, c.PostNorms, c.Act = true, true, ActGELUTanh
	c.EmbedScale = float64(float32(math.Sqrt(float64(c.Hidden))))
	d := c.HeadDim
	if c.Layers == 62 && c.Heads > 0 { // llama.cpp's LLM_TYPE_27B
		d = c.Hidden / c.Heads
	}
	if d <= 0 {
		return fmt.Errorf("%w: gemma3 head size %d", ErrConfig, d)
	}
	c.AttnScale = float64(1 / float32(math.Sqrt(float64(float32(d)))))
	return nil
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
	// Gemma-3 (Gemma3TextConfig; Gemma3Config nests it in text_config).
	TextConfig            json.RawMessage `json:"text_config"`
	HiddenActivation      string          `json:"hidden_activation"`
	QueryPreAttnScalar    *float64        `json:"query_pre_attn_scalar"`
	LayerTypes            []string        `json:"layer_types"`
	SlidingWindowPattern  *int            `json:"sliding_window_pattern"`
	RopeLocalBaseFreq     *float64        `json:"rope_local_base_freq"`
	FinalLogitSoftcapping json.RawMessage `json:"final_logit_softcapping"`
	AttnLogitSoftcapping  json.RawMessage `json:"attn_logit_softcapping"`
	Bidirectional         *bool           `json:"use_bidirectional_attention"`
}

// hfArchitectures maps the model classes of config.json's architectures to
// their model_type, for a config without model_type.
var hfArchitectures = map[string]string{
	"LlamaForCausalLM":   ArchLlama,
	"MistralForCausalLM": ArchMistral,
	"Qwen2ForCausalLM":   ArchQwen2,
	"Qwen3ForCausalLM":   ArchQwen3,
	"Gemma3ForCausalLM":  "gemma3_text",
}

// hfGemma3Text is Gemma3ForCausalLM's model_type; "gemma3" (Gemma3Config,
// the multimodal model) carries it in text_config.
const hfGemma3Text = "gemma3_text"

// ConfigFromHF reads a Hugging Face config.json of a Llama, Mistral, Qwen2,
// Qwen3 or Gemma-3 text model (model_type, else the architectures entry;
// gemma3_text, or gemma3 with its text_config); any other model_type is
// refused by name.
func ConfigFromHF(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("%w: config.json: %w", ErrConfig, err)
	}
	mt := h.ModelType
	if mt == "" && len(h.Architectures) > 0 {
		mt = hfArchitectures[h.Architectures[0]]
		if mt == "" {
			return Config{}, fmt.Errorf("%w: config.json architecture %q is not supported (llama, mistral, qwen2, qwen3, gemma3)", ErrConfig, h.Architectures[0])
		}
	}
	if mt == ArchGemma3 {
		// Gemma3Config: the text model's config is text_config.
		tc := strings.TrimSpace(string(h.TextConfig))
		if tc == "" || tc == "null" {
			return Config{}, fmt.Errorf("%w: config.json model_type gemma3 without text_config", ErrConfig)
		}
		h = hfConfig{}
		if err := json.Unmarshal([]byte(tc), &h); err != nil {
			return Config{}, fmt.Errorf("%w: config.json text_config: %w", ErrConfig, err)
		}
		if h.ModelType != "" && h.ModelType != hfGemma3Text {
			return Config{}, fmt.Errorf("%w: config.json gemma3 text_config model_type %q is not %s", ErrConfig, h.ModelType, hfGemma3Text)
		}
		mt = hfGemma3Text
	}
	switch mt {
	case ArchLlama, ArchMistral, ArchQwen2, ArchQwen3:
	case hfGemma3Text:
		return gemma3FromHF(h)
	default:
		return Config{}, fmt.Errorf("%w: config.json model_type %q is not supported (llama, mistral, qwen2, qwen3, gemma3_text, gemma3)", ErrConfig, mt)
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

// gemma3FromHF reads a Gemma3TextConfig as transformers 4.57 interprets it
// (models/gemma3): defaults of the class for absent keys, layer_types (or
// sliding_window_pattern, default 6) for the sliding layers, the norms'
// 1+w, embeddings times float32(sqrt(hidden_size)) (transformers computes
// the scale in the weights' dtype; nwc computes in float32, like
// transformers run in float32 and llama.cpp). Options nwc does not run
// (softcapping, bidirectional attention, biases, another activation, rope
// scaling other than linear) are refused by name.
func gemma3FromHF(h hfConfig) (Config, error) {
	const mt = hfGemma3Text
	act := h.HiddenActivation
	if act == "" {
		act = "gelu_pytorch_tanh"
	}
	if act != "gelu_pytorch_tanh" {
		return Config{}, fmt.Errorf("%w: %s hidden_activation %q is not supported (gelu_pytorch_tanh only)", ErrConfig, mt, act)
	}
	for k, v := range map[string]json.RawMessage{"final_logit_softcapping": h.FinalLogitSoftcapping, "attn_logit_softcapping": h.AttnLogitSoftcapping} {
		if s := strings.TrimSpace(string(v)); s != "" && s != "null" {
			return Config{}, fmt.Errorf("%w: %s %s %s is not supported", ErrConfig, mt, k, s)
		}
	}
	if h.Bidirectional != nil && *h.Bidirectional {
		return Config{}, fmt.Errorf("%w: %s use_bidirectional_attention is not supported", ErrConfig, mt)
	}
	if h.AttentionBias != nil && *h.AttentionBias {
		return Config{}, fmt.Errorf("%w: %s attention_bias is not supported", ErrConfig, mt)
	}
	// The defaults of Gemma3TextConfig.
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&h.HiddenSize, 2304)
	def(&h.Intermediate, 9216)
	def(&h.Layers, 26)
	def(&h.Heads, 8)
	def(&h.KVHeads, 4)
	def(&h.HeadDim, 256)
	def(&h.MaxPos, 131072)
	if h.RMSEps == 0 {
		h.RMSEps = 1e-6
	}
	if h.RopeTheta == 0 {
		h.RopeTheta = 1e6
	}
	c := Config{
		Arch: ArchGemma3, Naming: NamingHF,
		Layers: h.Layers, Hidden: h.HiddenSize, FFN: h.Intermediate,
		Heads: h.Heads, KVHeads: h.KVHeads, HeadDim: h.HeadDim, Vocab: h.VocabSize,
		RMSEps: h.RMSEps, RopeTheta: h.RopeTheta, ContextLen: h.MaxPos,
		QKNorm: true, PostNorms: true, Act: ActGELUTanh, NormShift: 1,
		RopeLocalTheta: 10000,
		SlidingWindow:  4096,
	}
	if h.RopeLocalBaseFreq != nil {
		c.RopeLocalTheta = *h.RopeLocalBaseFreq
	}
	if h.SlidingWindow != nil {
		c.SlidingWindow = *h.SlidingWindow
	}
	if c.SlidingWindow <= 0 {
		return Config{}, fmt.Errorf("%w: %s sliding_window %d must be positive", ErrConfig, mt, c.SlidingWindow)
	}
	qs := float64(256)
	if h.QueryPreAttnScalar != nil {
		qs = *h.QueryPreAttnScalar
	}
	if !(qs > 0) || math.IsInf(qs, 0) {
		return Config{}, fmt.Errorf("%w: %s query_pre_attn_scalar %g must be positive", ErrConfig, mt, qs)
	}
	c.AttnScale = float64(float32(math.Pow(qs, -0.5)))
	c.EmbedScale = float64(float32(math.Sqrt(float64(c.Hidden))))
	pattern, err := gemma3Pattern(h)
	if err != nil {
		return Config{}, err
	}
	c.SlidingPattern = pattern
	if f, err := linearRopeScaling(h.RopeScaling); err != nil {
		return Config{}, fmt.Errorf("%w: %s %w", ErrConfig, mt, err)
	} else {
		c.RopeScale = f
	}
	return c, nil
}

// gemma3Pattern is the sliding-window pattern of a Gemma3TextConfig: from
// layer_types when present (which must be a pattern: full_attention exactly
// at layers i with (i+1) % N == 0), else sliding_window_pattern (default 6).
func gemma3Pattern(h hfConfig) (int, error) {
	if len(h.LayerTypes) == 0 {
		p := 6
		if h.SlidingWindowPattern != nil {
			p = *h.SlidingWindowPattern
		}
		if p <= 0 {
			return 0, fmt.Errorf("%w: %s sliding_window_pattern %d must be positive", ErrConfig, hfGemma3Text, p)
		}
		return p, nil
	}
	if len(h.LayerTypes) != h.Layers {
		return 0, fmt.Errorf("%w: %s has %d layer_types for %d layers", ErrConfig, hfGemma3Text, len(h.LayerTypes), h.Layers)
	}
	p := len(h.LayerTypes) + 1 // all sliding
	for i, t := range h.LayerTypes {
		if t == "full_attention" {
			p = i + 1
			break
		}
	}
	for i, t := range h.LayerTypes {
		want := "sliding_attention"
		if (i+1)%p == 0 {
			want = "full_attention"
		}
		if t != want {
			return 0, fmt.Errorf("%w: %s layer_types %v: layer %d is %q, not a pattern of every %dth layer global (unsupported)", ErrConfig, hfGemma3Text, h.LayerTypes, i, t, p)
		}
	}
	return p, nil
}

// linearRopeScaling reads a rope_scaling entry: null, rope_type (or type)
// "default" (0), or "linear" with its factor; any other type is refused by
// name.
func linearRopeScaling(raw json.RawMessage) (float64, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, nil
	}
	var rs struct {
		RopeType string   `json:"rope_type"`
		Type     string   `json:"type"`
		Factor   *float64 `json:"factor"`
	}
	if err := json.Unmarshal(raw, &rs); err != nil {
		return 0, fmt.Errorf("rope_scaling %s: %w", s, err)
	}
	t := rs.RopeType
	if t == "" {
		t = rs.Type
	}
	switch t {
	case "default":
		return 0, nil
	case "linear":
		if rs.Factor == nil || !(*rs.Factor > 0) || math.IsInf(*rs.Factor, 0) {
			return 0, fmt.Errorf("rope_scaling %s: linear needs a positive factor", s)
		}
		return *rs.Factor, nil
	}
	return 0, fmt.Errorf("rope_scaling type %q is not supported (linear only)", t)
}
