//go:build cgo

package calib

import (
	"context"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
)

// A BERT encoder (minilm-l6) is calibrated through plugin/bert: its own
// tokenizer (the caller's is not used), windows of max_seq_length-2
// tokens, no sink weighting, H for all six linears of every layer.
func TestMiniLMHessians(t *testing.T) {
	tensortest.RequireModel(t, "minilm-l6")
	src, _, err := loader.Open("minilm-l6", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	h, err := Collect(context.Background(), src, nil, Options{Tokens: 500, NoCache: true, Threads: 2, SinkWeight: DefaultSinkWeight})
	if err != nil {
		t.Fatal(err)
	}
	if h.SeqLen != 254 || h.Windows != 2 || h.Tokens != 508 || h.SinkWeight != 1 || len(h.Inputs) != 24 {
		t.Fatalf("seq len %d, windows %d, tokens %d, sink weight %g, %d inputs", h.SeqLen, h.Windows, h.Tokens, h.SinkWeight, len(h.Inputs))
	}
	for l := 0; l < 6; l++ {
		for _, part := range []string{"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense"} {
			name := "encoder.layer." + string(rune('0'+l)) + "." + part + ".weight"
			in, ok := h.For(name)
			if !ok {
				t.Fatalf("no H for %s", name)
			}
			for i, d := range in.Diag() {
				if !(d > 0) {
					t.Fatalf("%s: diag H[%d] = %g", name, i, d)
				}
			}
		}
	}
}
