package arch

import (
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
)

func ggufKVs() []gguf.KV {
	u32 := func(v int) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: uint32(v)} }
	f32 := func(v float64) gguf.Value { return gguf.Value{Type: gguf.ValueFloat32, V: float32(v)} }
	return []gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, V: "llama"}},
		{Key: "llama.block_count", Value: u32(2)},
		{Key: "llama.context_length", Value: u32(128)},
		{Key: "llama.embedding_length", Value: u32(16)},
		{Key: "llama.feed_forward_length", Value: u32(24)},
		{Key: "llama.attention.head_count", Value: u32(4)},
		{Key: "llama.attention.head_count_kv", Value: u32(2)},
		{Key: "llama.rope.freq_base", Value: f32(10000)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: f32(1e-5)},
		{Key: "llama.rope.dimension_count", Value: u32(4)},
	}
}

func TestConfigFromSourceGGUF(t *testing.T) {
	meta, err := gguf.MarshalMetadataJSON(ggufKVs())
	if err != nil {
		t.Fatal(err)
	}
	src := &tensortest.MemSource{AssetList: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}}}
	src.Add(NamingGGUF.EmbedTensor(), make([]float32, 50*16), 50, 16)
	c, err := ConfigFromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Arch: "llama", Layers: 2, Hidden: 16, Heads: 4, KVHeads: 2, HeadDim: 4, FFN: 24,
		Vocab: 50, RopeTheta: 10000, RMSEps: float64(float32(1e-5)), ContextLen: 128, Tied: true, Naming: NamingGGUF}
	if c != want {
		t.Fatalf("config\n got %+v\nwant %+v", c, want)
	}
	// With an output head the model is untied; a wrong width is an error.
	src.Add(NamingGGUF.HeadTensor(), make([]float32, 50*16), 50, 16)
	if c, err := ConfigFromSource(src); err != nil || c.Tied {
		t.Fatalf("untied: %+v %v", c, err)
	}
	src.Infos[0].Shape = []int64{50, 8}
	if _, err := ConfigFromSource(src); !errors.Is(err, ErrConfig) {
		t.Fatalf("wrong embedding width: %v", err)
	}
}

func TestConfigFromHF(t *testing.T) {
	cj, _ := json.Marshal(map[string]any{"model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
		"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
		"vocab_size": 50, "rms_norm_eps": 1e-5, "rope_theta": 10000, "tie_word_embeddings": false, "hidden_act": "silu"})
	src := &tensortest.MemSource{AssetList: []tensor.Asset{{Name: HFConfigAsset, Data: cj}}}
	src.Add(NamingHF.EmbedTensor(), make([]float32, 50*16), 50, 16)
	src.Add(NamingHF.HeadTensor(), make([]float32, 50*16), 50, 16)
	c, err := ConfigFromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	if c.Naming != NamingHF || c.Tied || c.HeadDim != 4 || c.Vocab != 50 || c.KVHeads != 2 {
		t.Fatalf("config %+v", c)
	}
	for _, bad := range []string{
		`{"model_type": "gemma3"}`,
		`{"model_type": "llama", "hidden_act": "gelu"}`,
		`{"model_type": "llama", "rope_scaling": {"type": "linear"}}`,
		`not json`,
	} {
		if _, err := ConfigFromHF([]byte(bad)); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: want ErrConfig, got %v", bad, err)
		}
	}
}

// TestConfigFromHFFamilies: the Llama-like model types and their flags;
// other model types are refused by name.
func TestConfigFromHFFamilies(t *testing.T) {
	base := `"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256`
	for _, tc := range []struct {
		json   string
		want   Config
		headDm int
	}{
		{`{"model_type": "llama", ` + base + `}`, Config{Arch: ArchLlama}, 16},
		{`{"model_type": "llama", "attention_bias": true, ` + base + `}`, Config{Arch: ArchLlama, QKVBias: true}, 16},
		{`{"architectures": ["MistralForCausalLM"], "sliding_window": null, ` + base + `}`, Config{Arch: ArchMistral}, 16},
		{`{"model_type": "mistral", "sliding_window": 4096, ` + base + `}`, Config{Arch: ArchMistral, SlidingWindow: 4096}, 16},
		{`{"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": false, ` + base + `}`, Config{Arch: ArchQwen2, QKVBias: true}, 16},
		{`{"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": true, ` + base + `}`, Config{Arch: ArchQwen2, QKVBias: true, SlidingWindow: 4096}, 16},
		{`{"model_type": "qwen3", "head_dim": 32, ` + base + `}`, Config{Arch: ArchQwen3, QKNorm: true}, 32},
	} {
		c, err := ConfigFromHF([]byte(tc.json))
		if err != nil {
			t.Fatalf("%s: %v", tc.json, err)
		}
		if c.Arch != tc.want.Arch || c.QKVBias != tc.want.QKVBias || c.QKNorm != tc.want.QKNorm ||
			c.SlidingWindow != tc.want.SlidingWindow || c.HeadDim != tc.headDm {
			t.Errorf("%s: config %+v", tc.json, c)
		}
	}
	for _, mt := range []string{"gemma3", "phi3", "qwen2_moe"} {
		_, err := ConfigFromHF([]byte(`{"model_type": "` + mt + `", ` + base + `}`))
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), mt) {
			t.Errorf("%s: want ErrConfig naming it, got %v", mt, err)
		}
	}
	if _, err := ConfigFromHF([]byte(`{"architectures": ["Gemma2ForCausalLM"]}`)); err == nil || !strings.Contains(err.Error(), "Gemma2ForCausalLM") {
		t.Errorf("Gemma2ForCausalLM: want an error naming it, got %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := ConfigFromSource(&tensortest.MemSource{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no metadata: %v", err)
	}
	kvs := ggufKVs()
	kvs[0].Value.V = "gemma2"
	if _, err := ConfigFromGGUF(kvs); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "gemma2") {
		t.Fatalf("gemma2: %v", err)
	}
	if _, err := ConfigFromGGUF(ggufKVs()[:2]); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "llama.embedding_length") {
		t.Fatalf("missing keys: %v", err)
	}
	c := Config{Arch: "llama", Layers: 2, Hidden: 16, Heads: 4, KVHeads: 3, HeadDim: 4, FFN: 24,
		Vocab: 50, RopeTheta: 10000, RMSEps: 1e-5, Naming: NamingGGUF}
	if err := c.Validate(); !errors.Is(err, ErrConfig) {
		t.Fatalf("4 heads / 3 kv heads: %v", err)
	}
}

func TestNaming(t *testing.T) {
	for _, tc := range []struct {
		n    Naming
		part string
		want string
	}{
		{NamingGGUF, "attn_q", "blk.3.attn_q.weight"},
		{NamingHF, "attn_q", "model.layers.3.self_attn.q_proj.weight"},
		{NamingHF, "ffn_norm", "model.layers.3.post_attention_layernorm.weight"},
		{NamingHF, "ffn_down", "model.layers.3.mlp.down_proj.weight"},
		{NamingHF, "attn_k_norm", "model.layers.3.self_attn.k_norm.weight"},
		{NamingGGUF, "attn_k_norm", "blk.3.attn_k_norm.weight"},
	} {
		if got := tc.n.LayerTensor(3, tc.part); got != tc.want {
			t.Errorf("%s %s: %q, want %q", tc.n, tc.part, got, tc.want)
		}
	}
	if NamingHF.LayerBias(1, "attn_v") != "model.layers.1.self_attn.v_proj.bias" || NamingGGUF.LayerBias(1, "attn_v") != "blk.1.attn_v.bias" {
		t.Error("bias names")
	}
	if NamingGGUF.NormTensor() != "output_norm.weight" || NamingHF.NormTensor() != "model.norm.weight" {
		t.Error("norm tensor names")
	}
}

// gemma3KVs is the metadata of gemma-3-270m's GGUF (llama.cpp's converter).
func gemma3KVs(extra ...gguf.KV) []gguf.KV {
	u32 := func(v int) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: uint32(v)} }
	f32 := func(v float64) gguf.Value { return gguf.Value{Type: gguf.ValueFloat32, V: float32(v)} }
	return append([]gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, V: "gemma3"}},
		{Key: "gemma3.context_length", Value: u32(32768)},
		{Key: "gemma3.embedding_length", Value: u32(640)},
		{Key: "gemma3.block_count", Value: u32(18)},
		{Key: "gemma3.feed_forward_length", Value: u32(2048)},
		{Key: "gemma3.attention.head_count", Value: u32(4)},
		{Key: "gemma3.attention.layer_norm_rms_epsilon", Value: f32(1e-6)},
		{Key: "gemma3.attention.key_length", Value: u32(256)},
		{Key: "gemma3.attention.value_length", Value: u32(256)},
		{Key: "gemma3.rope.freq_base", Value: f32(1e6)},
		{Key: "gemma3.attention.sliding_window", Value: u32(512)},
		{Key: "gemma3.attention.head_count_kv", Value: u32(1)},
	}, extra...)
}

// TestConfigFromGGUFGemma3: gemma3 metadata read as llama.cpp does
// (pattern 6, local base 10000, scale 1/sqrt(key_length), plain norms,
// unpermuted q/k); linear rope scaling is read, other kinds and
// softcapping are refused by name.
func TestConfigFromGGUFGemma3(t *testing.T) {
	c, err := ConfigFromGGUF(gemma3KVs())
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Arch: ArchGemma3, Layers: 18, Hidden: 640, Heads: 4, KVHeads: 1, HeadDim: 256, FFN: 2048,
		RopeTheta: 1e6, RMSEps: float64(float32(1e-6)), ContextLen: 32768, Naming: NamingGGUF,
		QKNorm: true, SlidingWindow: 512, SlidingPattern: 6, Act: ActGELUTanh, AttnScale: 1.0 / 16,
		EmbedScale: float64(float32(math.Sqrt(640))), PostNorms: true, RopeLocalTheta: 10000}
	if c != want {
		t.Fatalf("config\n got %+v\nwant %+v", c, want)
	}
	if c.PermutedQK() || c.NormShift != 0 {
		t.Error("gemma3 GGUF: q/k rows are not permuted and norms carry their +1")
	}
	var sliding []int
	for l := 0; l < c.Layers; l++ {
		if !c.IsSliding(l) {
			sliding = append(sliding, l)
		}
		if base := c.RopeBase(l); base != map[bool]float64{true: 10000, false: 1e6}[c.IsSliding(l)] {
			t.Errorf("layer %d: rope base %g", l, base)
		}
	}
	if !slices.Equal(sliding, []int{5, 11, 17}) {
		t.Errorf("global layers %v, want [5 11 17]", sliding)
	}
	str := func(s string) gguf.Value { return gguf.Value{Type: gguf.ValueString, V: s} }
	f32 := func(v float64) gguf.Value { return gguf.Value{Type: gguf.ValueFloat32, V: float32(v)} }
	c, err = ConfigFromGGUF(gemma3KVs(gguf.KV{Key: "gemma3.rope.scaling.type", Value: str("linear")}, gguf.KV{Key: "gemma3.rope.scaling.factor", Value: f32(8)}))
	if err != nil || c.RopeScale != 8 || c.RopeFactor(5) != 8 || c.RopeFactor(4) != 1 {
		t.Fatalf("linear scaling: %+v %v", c, err)
	}
	// The 27B (62 layers): 1/sqrt(embedding_length/head_count).
	kvs := gemma3KVs()
	for i := range kvs {
		switch kvs[i].Key {
		case "gemma3.block_count":
			kvs[i].Value.V = uint32(62)
		case "gemma3.embedding_length":
			kvs[i].Value.V = uint32(5376)
		case "gemma3.attention.head_count":
			kvs[i].Value.V = uint32(32)
		}
	}
	if c, err := ConfigFromGGUF(kvs); err != nil || c.AttnScale != float64(1/float32(math.Sqrt(168))) {
		t.Fatalf("27B scale: %+v %v", c, err)
	}
	for _, bad := range [][]gguf.KV{
		gemma3KVs(gguf.KV{Key: "gemma3.rope.scaling.type", Value: str("yarn")}),
		gemma3KVs(gguf.KV{Key: "gemma3.final_logit_softcapping", Value: f32(30)}),
	} {
		if _, err := ConfigFromGGUF(bad); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "gemma3") {
			t.Errorf("%v: want ErrConfig naming gemma3, got %v", bad[len(bad)-1], err)
		}
	}
	if _, err := ConfigFromGGUF(gemma3KVs()[:10]); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "gemma3.attention.sliding_window") {
		t.Errorf("no sliding window: %v", err)
	}
}

// TestConfigFromHFGemma3: Gemma3TextConfig (and Gemma3Config's
// text_config) with transformers' defaults and interpretation; options
// nwc does not run are refused by name.
func TestConfigFromHFGemma3(t *testing.T) {
	text := `"model_type": "gemma3_text", "hidden_size": 640, "intermediate_size": 2048, "num_hidden_layers": 18,
		"num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256, "vocab_size": 262144, "query_pre_attn_scalar": 256,
		"sliding_window": 512, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0, "rope_scaling": null,
		"final_logit_softcapping": null, "attn_logit_softcapping": null, "hidden_activation": "gelu_pytorch_tanh"`
	c, err := ConfigFromHF([]byte(`{` + text + `}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Arch: ArchGemma3, Layers: 18, Hidden: 640, Heads: 4, KVHeads: 1, HeadDim: 256, FFN: 2048, Vocab: 262144,
		RopeTheta: 1e6, RMSEps: 1e-6, ContextLen: 131072, Naming: NamingHF,
		QKNorm: true, SlidingWindow: 512, SlidingPattern: 6, Act: ActGELUTanh, AttnScale: 1.0 / 16,
		EmbedScale: float64(float32(math.Sqrt(640))), NormShift: 1, PostNorms: true, RopeLocalTheta: 10000}
	if c != want {
		t.Fatalf("config\n got %+v\nwant %+v", c, want)
	}
	if c.PermutedQK() {
		t.Error("HF q/k rows are not permuted")
	}
	// Gemma3Config: the same inside text_config.
	if c2, err := ConfigFromHF([]byte(`{"model_type": "gemma3", "text_config": {` + text + `}}`)); err != nil || c2 != c {
		t.Fatalf("text_config: %+v %v", c2, err)
	}
	// layer_types: a pattern of every 2nd layer global, and linear scaling.
	c, err = ConfigFromHF([]byte(`{"model_type": "gemma3_text", "num_hidden_layers": 3, "sliding_window": 6,
		"layer_types": ["sliding_attention", "full_attention", "sliding_attention"], "rope_scaling": {"rope_type": "linear", "factor": 4}}`))
	if err != nil || c.SlidingPattern != 2 || !c.IsSliding(0) || c.IsSliding(1) || !c.IsSliding(2) || c.RopeScale != 4 || c.RopeFactor(1) != 4 || c.RopeFactor(0) != 1 {
		t.Fatalf("layer_types: %+v %v", c, err)
	}
	for _, bad := range []struct{ json, names string }{
		{`{"model_type": "gemma3_text", "final_logit_softcapping": 30.0}`, "final_logit_softcapping"},
		{`{"model_type": "gemma3_text", "attn_logit_softcapping": 50.0}`, "attn_logit_softcapping"},
		{`{"model_type": "gemma3_text", "hidden_activation": "gelu"}`, "gelu"},
		{`{"model_type": "gemma3_text", "rope_scaling": {"rope_type": "yarn", "factor": 8}}`, "yarn"},
		{`{"model_type": "gemma3_text", "use_bidirectional_attention": true}`, "bidirectional"},
		{`{"model_type": "gemma3_text", "num_hidden_layers": 3, "layer_types": ["full_attention", "sliding_attention", "sliding_attention"]}`, "layer_types"},
		{`{"model_type": "gemma3", "text_config": {"model_type": "gemma2"}}`, "gemma2"},
	} {
		if _, err := ConfigFromHF([]byte(bad.json)); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), bad.names) {
			t.Errorf("%s: want ErrConfig naming %s, got %v", bad.json, bad.names, err)
		}
	}
}

func TestGemma3Naming(t *testing.T) {
	hf := Config{Arch: ArchGemma3, Naming: NamingHF}
	gg := Config{Arch: ArchGemma3, Naming: NamingGGUF}
	for _, tc := range []struct {
		c          Config
		part, want string
	}{
		{hf, "attn_norm", "model.layers.2.input_layernorm.weight"},
		{hf, "post_attention_norm", "model.layers.2.post_attention_layernorm.weight"},
		{hf, "ffn_norm", "model.layers.2.pre_feedforward_layernorm.weight"},
		{hf, "post_ffw_norm", "model.layers.2.post_feedforward_layernorm.weight"},
		{hf, "attn_q_norm", "model.layers.2.self_attn.q_norm.weight"},
		{gg, "post_attention_norm", "blk.2.post_attention_norm.weight"},
		{gg, "ffn_norm", "blk.2.ffn_norm.weight"},
		{gg, "post_ffw_norm", "blk.2.post_ffw_norm.weight"},
		{Config{Arch: ArchLlama, Naming: NamingHF}, "ffn_norm", "model.layers.2.post_attention_layernorm.weight"},
	} {
		if got := tc.c.LayerTensor(2, tc.part); got != tc.want {
			t.Errorf("%s %s %s: %q, want %q", tc.c.Arch, tc.c.Naming, tc.part, got, tc.want)
		}
	}
}

// TestGemma3MultimodalTensors: a Gemma3ForConditionalGeneration checkpoint
// (language_model.* names) is refused with a message saying so.
func TestGemma3MultimodalTensors(t *testing.T) {
	cj := []byte(`{"model_type": "gemma3", "text_config": {"model_type": "gemma3_text", "hidden_size": 16, "num_hidden_layers": 1,
		"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "intermediate_size": 32}}`)
	src := &tensortest.MemSource{AssetList: []tensor.Asset{{Name: HFConfigAsset, Data: cj}}}
	src.Add("language_model.model.embed_tokens.weight", make([]float32, 10*16), 10, 16)
	_, err := ConfigFromSource(src)
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "multimodal") {
		t.Fatalf("want ErrConfig about a multimodal checkpoint, got %v", err)
	}
	src = &tensortest.MemSource{AssetList: src.AssetList}
	src.Add(NamingHF.EmbedTensor(), make([]float32, 10*16), 10, 16)
	if c, err := ConfigFromSource(src); err != nil || c.Arch != ArchGemma3 || !c.Tied || c.Vocab != 10 {
		t.Fatalf("text model names: %+v %v", c, err)
	}
}
