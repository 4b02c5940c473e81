//go:build cgo

package bert

import (
	"context"
	"math"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
)

// The calibration graph's H of layer 1's q/k/v input is XᵀX of the hidden
// state after layer 0, computed here by a one-layer encoder's output; every
// layer has its 4 inputs with the right weights.
func TestCalibrationMatchesHidden(t *testing.T) {
	src := openMiniLM(t)
	cal, err := OpenCalibrator(src, CalibrationOptions{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer cal.Close()
	cfg := cal.Config()
	ins := cal.Inputs()
	if len(ins) != 4*cfg.Layers {
		t.Fatalf("%d inputs, want %d", len(ins), 4*cfg.Layers)
	}
	wantWeights := map[string][]string{
		KindAttnIn: {PartQuery, PartKey, PartValue}, KindAttnOut: {PartAttnOut}, KindFFNIn: {PartInter}, KindFFNOut: {PartOutput},
	}
	for _, in := range ins {
		parts := wantWeights[in.Kind]
		if len(in.Weights) != len(parts) {
			t.Fatalf("%s: weights %v", in.Name, in.Weights)
		}
		for i, p := range parts {
			if in.Weights[i] != cfg.layer(in.Layer, p+".weight") {
				t.Errorf("%s: weight %s, want %s", in.Name, in.Weights[i], cfg.layer(in.Layer, p+".weight"))
			}
		}
		if want := cfg.Hidden; in.Kind == KindFFNOut {
			if in.N != cfg.FFN {
				t.Errorf("%s: n %d", in.Name, in.N)
			}
		} else if in.N != want {
			t.Errorf("%s: n %d", in.Name, in.N)
		}
	}
	seqs := [][]int32{{2023, 2003, 1037, 3231, 6251, 1012}, {7592, 2088, 2003, 1037, 2307, 2173}}
	var h1 []float32
	if err := cal.Run(context.Background(), seqs, func(i int, h []float32) {
		if ins[i].Layer == 1 && ins[i].Kind == KindAttnIn {
			h1 = append([]float32(nil), h...)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := cal.Run(context.Background(), [][]int32{{1, 2}, {3}}, func(int, []float32) {}); err == nil {
		t.Error("ragged sequences accepted")
	}

	// One-layer encoder: its output is layer 1's input.
	c1 := cfg
	c1.Layers = 1
	data, err := Build(c1, src)
	if err != nil {
		t.Fatal(err)
	}
	so, _, _, err := sessionOptions("cpu", 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer so.Destroy()
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{InputIDs, InputMask}, []string{OutputHidden}, so)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Destroy()
	B, S, D := 2, len(seqs[0])+2, cfg.Hidden
	ids, mask := make([]int64, 0, B*S), make([]int64, B*S)
	for _, s := range seqs {
		ids = append(ids, int64(cal.cls))
		for _, v := range s {
			ids = append(ids, int64(v))
		}
		ids = append(ids, int64(cal.sep))
	}
	for i := range mask {
		mask[i] = 1
	}
	x := make([]float32, B*S*D)
	if err := runSession(context.Background(), sess, B, S, ids, mask, []outBuf{{x, []int64{int64(B), int64(S), int64(D)}}}); err != nil {
		t.Fatal(err)
	}
	var worst, scale float64
	for i := 0; i < D; i++ {
		for j := 0; j < D; j++ {
			var s float64
			for tk := 0; tk < B*S; tk++ {
				s += float64(x[tk*D+i]) * float64(x[tk*D+j])
			}
			worst = max(worst, math.Abs(s-float64(h1[i*D+j])))
			scale = max(scale, math.Abs(s))
		}
	}
	t.Logf("H(blk.1.attn_qkv) vs XᵀX of the one-layer encoder's output: max |diff| %.3g (max |H| %.3g)", worst, scale)
	if worst > 1e-4*scale {
		t.Errorf("H differs from XᵀX: %g of %g", worst, scale)
	}
}
