//go:build !cgo

package plugin_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/plugin"
)

// Without cgo there is no ONNX Runtime: lossless and rtn tensors still read,
// a neural-coded one is refused with an error that says why.
func TestNoCGONeuralRefused(t *testing.T) {
	ctx := context.Background()
	m, err := plugin.Open(ctx, filepath.Join("testdata", "tiny-nwc.nwc"), plugin.WithPrefetch(0))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := m.ReadTensor(ctx, "token_embd.weight", plugin.F32, nil); err != nil {
		t.Fatalf("lossless tensor: %v", err)
	}
	_, err = m.ReadTensor(ctx, "blk.0.attn_q.weight", plugin.F32, nil)
	if !errors.Is(err, plugin.ErrUnsupported) || !strings.Contains(err.Error(), "ONNX Runtime") ||
		!strings.Contains(err.Error(), "CGO_ENABLED=0") || !strings.Contains(err.Error(), "blk.0.attn_q.weight") {
		t.Fatalf("neural tensor without cgo: %v", err)
	}
	t.Log(err)
}
