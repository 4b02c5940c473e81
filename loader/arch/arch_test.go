package arch

import (
	"encoding/json"
	"errors"
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
	if _, err := ConfigFromHF([]byte(`{"architectures": ["Gemma3ForCausalLM"]}`)); err == nil || !strings.Contains(err.Error(), "Gemma3ForCausalLM") {
		t.Errorf("Gemma3ForCausalLM: want an error naming it, got %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	if _, err := ConfigFromSource(&tensortest.MemSource{}); !errors.Is(err, ErrConfig) {
		t.Fatalf("no metadata: %v", err)
	}
	kvs := ggufKVs()
	kvs[0].Value.V = "gemma3"
	if _, err := ConfigFromGGUF(kvs); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "gemma3") {
		t.Fatalf("gemma3: %v", err)
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
