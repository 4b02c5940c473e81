package loader

import (
	"testing"

	"github.com/nwc-project/nwc/loader/arch"
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
