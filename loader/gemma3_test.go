package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
)

// TestIsBlockLinearGemma3: Gemma-3's seven block linears are coded lossy
// in both namings; its norms (four per layer, q/k norms) and the embedding
// are not.
func TestIsBlockLinearGemma3(t *testing.T) {
	for _, naming := range []arch.Naming{arch.NamingGGUF, arch.NamingHF} {
		c := arch.Config{Arch: arch.ArchGemma3, Naming: naming}
		for _, part := range []string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"} {
			if name := c.LayerTensor(4, part); !IsBlockLinear(tensor.Info{Name: name, Shape: []int64{8, 8}}) {
				t.Errorf("%s: not a block linear", name)
			}
		}
		for _, part := range []string{"attn_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm", "attn_q_norm", "attn_k_norm"} {
			// 2-D to check the names alone.
			if name := c.LayerTensor(4, part); IsBlockLinear(tensor.Info{Name: name, Shape: []int64{8, 8}}) {
				t.Errorf("%s: a block linear", name)
			}
		}
		for _, name := range []string{naming.EmbedTensor(), naming.NormTensor(), naming.HeadTensor()} {
			if IsBlockLinear(tensor.Info{Name: name, Shape: []int64{8, 8}}) {
				t.Errorf("%s: a block linear", name)
			}
		}
	}
}

// TestExportHFRefusesGemma3GGUF: a gemma3 GGUF is not exported as a
// Hugging Face folder (the names, norms and config.json written are
// Llama's): refused by name.
func TestExportHFRefusesGemma3GGUF(t *testing.T) {
	u32 := func(v int) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: uint32(v)} }
	meta, err := gguf.MarshalMetadataJSON([]gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, V: "gemma3"}},
		{Key: "gemma3.block_count", Value: u32(1)},
		{Key: "gemma3.embedding_length", Value: u32(8)},
		{Key: "gemma3.feed_forward_length", Value: u32(16)},
		{Key: "gemma3.attention.head_count", Value: u32(2)},
		{Key: "gemma3.attention.key_length", Value: u32(4)},
		{Key: "gemma3.attention.sliding_window", Value: u32(4)},
	})
	if err != nil {
		t.Fatal(err)
	}
	src := &tensortest.MemSource{AssetList: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}}}
	src.Add(arch.NamingGGUF.EmbedTensor(), make([]float32, 10*8), 10, 8)
	if c, err := arch.ConfigFromSource(src); err != nil || c.Arch != arch.ArchGemma3 {
		t.Fatalf("config %+v %v", c, err)
	}
	_, err = NewHFExport(src, ExportOptions{DType: tensor.F32})
	if !errors.Is(err, tensor.ErrUnsupported) || !strings.Contains(err.Error(), "gemma3") {
		t.Fatalf("want ErrUnsupported naming gemma3, got %v", err)
	}
}
