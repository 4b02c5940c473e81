//go:build cgo

package ortcodec

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strconv"
	"testing"
)

// TestGainNativeMatchesORT: for every shipped KindGain codec, the Go
// transform (what nwc runs) and the codec's ONNX graphs through ONNX Runtime
// give bit-identical encoder and decoder outputs on the parity inputs, and
// both match PyTorch within the parity tolerance.
func TestGainNativeMatchesORT(t *testing.T) {
	ctx := context.Background()
	found := 0
	for _, dir := range shippedCodecs(t) {
		native, err := loadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if native.Kind() != KindGain {
			native.Close()
			continue
		}
		found++
		t.Run(filepath.Base(dir), func(t *testing.T) {
			defer native.Close()
			if native.enc != nil || native.dec != nil {
				t.Fatal("a gain codec created ONNX Runtime sessions")
			}
			ortc, err := loadDir(dir, withORT())
			if err != nil {
				t.Fatal(err)
			}
			defer ortc.Close()
			p, err := readParity(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range []struct {
				name   string
				in     []float32
				ref    []float32
				go_, r func(context.Context, []float32, []int64) ([]float32, error)
			}{
				{"encode", p.X, p.Y, native.Encode, ortc.Encode},
				{"decode", p.YHat, p.XHat, native.Decode, ortc.Decode},
			} {
				got, err := op.go_(ctx, op.in, p.Q)
				if err != nil {
					t.Fatal(err)
				}
				want, err := op.r(ctx, op.in, p.Q)
				if err != nil {
					t.Fatal(err)
				}
				diff := 0
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						diff++
					}
				}
				if diff != 0 {
					t.Errorf("%s: %d of %d values differ between Go and ONNX Runtime", op.name, diff, len(got))
				}
				if s := compareOutputs(got, op.ref); s.rel > parityRelTol {
					t.Errorf("%s vs PyTorch: %v", op.name, s)
				}
			}
		})
	}
	if found == 0 {
		t.Skip("no gain codec under ../models")
	}
}

// TestParseKindRejects: a gain card with missing, short or non-finite
// constants, or an unknown kind, is refused with ErrModel.
func TestParseKindRejects(t *testing.T) {
	bits := func(n int, v float32) string {
		s := "["
		for i := range n {
			if i > 0 {
				s += ","
			}
			s += strconv.FormatUint(uint64(math.Float32bits(v)), 10)
		}
		return s + "]"
	}
	std := `"io":{"inside_graph_standardization":{"mean_f32_bits":0,"std_f32_bits":` + strconv.FormatUint(uint64(math.Float32bits(1)), 10) + `}}`
	good := `{"architecture":{"kind":"gain","gain":{"decoder_f32_bits":` + bits(64, 0.5) + `,"encoder_f32_bits":` + bits(64, 2) + `}},` + std + `}`
	if k, g, err := parseKind("x", []byte(good)); err != nil || k != KindGain || g.dec[3][15] != 0.5 || g.enc[0][0] != 2 || g.std != 1 {
		t.Fatalf("good card: %v %v %+v", k, err, g)
	}
	if k, g, err := parseKind("x", []byte(`{"architecture":{"width":128}}`)); err != nil || k != KindMLP || g != nil {
		t.Fatalf("card without kind: %v %v", k, err)
	}
	for name, card := range map[string]string{
		"unknown kind":  `{"architecture":{"kind":"transformer"}}`,
		"no constants":  `{"architecture":{"kind":"gain"},` + std + `}`,
		"short":         `{"architecture":{"kind":"gain","gain":{"decoder_f32_bits":` + bits(63, 0.5) + `,"encoder_f32_bits":` + bits(64, 2) + `}},` + std + `}`,
		"nan":           `{"architecture":{"kind":"gain","gain":{"decoder_f32_bits":` + bits(64, float32(math.NaN())) + `,"encoder_f32_bits":` + bits(64, 2) + `}},` + std + `}`,
		"zero":          `{"architecture":{"kind":"gain","gain":{"decoder_f32_bits":` + bits(64, 0) + `,"encoder_f32_bits":` + bits(64, 2) + `}},` + std + `}`,
		"no std":        `{"architecture":{"kind":"gain","gain":{"decoder_f32_bits":` + bits(64, 0.5) + `,"encoder_f32_bits":` + bits(64, 2) + `}}}`,
		"not json":      `{"architecture":`,
		"wrong types":   `{"architecture":{"kind":7}}`,
		"negative bits": `{"architecture":{"kind":"gain","gain":{"decoder_f32_bits":[-1]}}}`,
	} {
		if _, _, err := parseKind("x", []byte(card)); !errors.Is(err, ErrModel) {
			t.Errorf("%s: err %v, want ErrModel", name, err)
		}
	}
}
