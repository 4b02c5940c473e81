//go:build cgo

package ortcodec

import (
	"context"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
)

// TestTinyTrainingExport runs the codec training pipeline end to end on a
// tiny dataset (scripts/train/run_all.sh --tiny: dataset, a few training
// steps, ONNX + entropy table export) and checks that the Go side loads the
// exported codec and round-trips chunks through it. It needs the training
// venv (make setup-train): skipped without it, failed with NWC_REQUIRE_TRAIN=1.
func TestTinyTrainingExport(t *testing.T) {
	orttest.Require(t)
	cache := os.Getenv("NWC_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "nwc")
	}
	py := filepath.Join(cache, "venv-train", "bin", "python")
	if _, err := os.Stat(py); err != nil {
		if os.Getenv("NWC_REQUIRE_TRAIN") == "1" {
			t.Fatalf("training venv missing (make setup-train): %v", err)
		}
		t.Skip("training venv missing (make setup-train):", err)
	}
	if testing.Short() {
		t.Skip("-short: the tiny training run takes about a minute")
	}
	out := filepath.Join(t.TempDir(), "nwc-tiny")
	script, _ := filepath.Abs("../scripts/train/run_all.sh")
	cmd := exec.Command("bash", script, "--tiny")
	cmd.Env = append(os.Environ(), "PY="+py, "OUT="+out, "NWC_CACHE="+cache)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run_all.sh --tiny: %v\n%s", err, b)
	}
	c, err := loadDir(out, WithThreads(1))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewSource(1))
	n := 3000
	x := make([]float32, n*D)
	q := make([]int64, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	for i := range q {
		q[i] = int64(i % NumLevels)
	}
	payload, err := roundTripCompress(c, ctx, x, q, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := roundTripDecompress(c, ctx, payload, q)
	if err != nil {
		t.Fatal(err)
	}
	// The same path step by step must give the same values.
	y, _ := c.Encode(ctx, x, q)
	s, _ := c.Quantize(y, q, nil)
	yh, _ := c.Dequantize(s, q, nil)
	want, _ := c.Decode(ctx, yh, q)
	var mse float64
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("value %d: %v after the entropy round trip, %v directly", i, got[i], want[i])
		}
		d := float64(got[i] - x[i])
		mse += d * d
	}
	t.Logf("tiny codec: %d chunks, %.3f bits/weight, mse %.4f (a few training steps: quality is not the point)",
		n, 8*float64(len(payload))/float64(len(x)), mse/float64(len(x)))
}
