//go:build cgo

package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
)

// nwc eval on a compressed BERT encoder switches to the embedding mode by
// itself and reports the fidelity to the reference.
func TestEvalEmbed(t *testing.T) {
	ctx := context.Background()
	if err := runEval(ctx, []string{"--mode", "bogus", "--model", tinyRTN}); err == nil || !strings.Contains(err.Error(), "--mode") {
		t.Errorf("--mode bogus: %v", err)
	}
	tensortest.RequireModel(t, "minilm-l6")
	if err := runEval(ctx, []string{"--model", "minilm-l6"}); err == nil || !strings.Contains(err.Error(), "--reference") {
		t.Errorf("embedding mode without a reference: %v", err)
	}
	path := filepath.Join(t.TempDir(), "m4.nwc")
	if _, err := capture(t, func() error {
		return runCompress(ctx, []string{"--model", "minilm-l6", "--codec", "rtn-g128", "--bits", "4", "-o", path, "-q"})
	}); err != nil {
		t.Fatal(err)
	}
	out, err := capture(t, func() error {
		return runEval(ctx, []string{"--model", path, "--reference", "minilm-l6", "--sentences", "40", "--topk", "5", "--json", "-q", "--threads", "2"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var r embedEvalJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	t.Logf("rtn-g128 4 bits: %.3f bits/weight, mean cosine %.5f, min %.5f, top-5 agreement %.3f", r.LinearBitsPerW, r.MeanCosine, r.MinCosine, r.TopKAgreement)
	if r.Sentences != 40 || r.TopK != 5 || !(r.LinearBitsPerW > 4 && r.LinearBitsPerW < 4.5) ||
		!(r.MeanCosine > 0.9 && r.MeanCosine < 1) || !(r.MinCosine <= r.MeanCosine) || !(r.TopKAgreement > 0.5 && r.TopKAgreement <= 1) {
		t.Errorf("report %+v", r)
	}
}
