//go:build cgo

package plugin_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/models"
	"github.com/nwc-project/nwc/plugin"
)

func requireORT(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(ortenv.DefaultLibrary()); err != nil {
		if os.Getenv("NWC_REQUIRE_ORT") != "" {
			t.Fatalf("ONNX Runtime required: %v", err)
		}
		t.Skip("no ONNX Runtime library (make setup)")
	}
}

func TestNeuralDecode(t *testing.T) {
	requireORT(t)
	ctx := context.Background()
	m, err := plugin.Open(ctx, filepath.Join("testdata", "tiny-nwc.nwc"), plugin.WithThreads(1), plugin.WithDecodeSessions(2))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src := tinySource()
	for _, name := range []string{"blk.0.attn_q.weight", "blk.0.ffn_up.weight"} {
		b, err := m.ReadTensor(ctx, name, plugin.F32, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, want := f32s(b), src.Data[name]
		var se, ss float64
		for i := range want {
			d := float64(got[i] - want[i])
			se += d * d
			ss += float64(want[i]) * float64(want[i])
		}
		// nwc-w128d2-l300 codes at ~3.9 bits/weight: relative MSE ~1e-2.
		if se == 0 || se/ss > 0.05 {
			t.Errorf("%s: relative error %g, want (0, 0.05]", name, se/ss)
		}
	}
	// Another codec under the same name: refused, not decoded wrong.
	swapped := fstest.MapFS{}
	for _, f := range []string{"encoder.onnx", "decoder.onnx", "entropy.json", "card.json"} {
		b, err := models.FS.ReadFile("nwc-w128d2-l50/" + f)
		if err != nil {
			t.Fatal(err)
		}
		swapped["nwc-w128d2-l300/"+f] = &fstest.MapFile{Data: b}
	}
	m2, err := plugin.Open(ctx, filepath.Join("testdata", "tiny-nwc.nwc"), plugin.WithCodecs(swapped), plugin.WithPrefetch(0))
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if _, err := m2.ReadTensor(ctx, "blk.0.attn_q.weight", plugin.F32, nil); !errors.Is(err, plugin.ErrCodecMismatch) {
		t.Errorf("swapped codec: %v, want ErrCodecMismatch", err)
	}
}

// TestHostEnvironment runs in a fresh process (the ONNX Runtime environment
// is process-wide): the host creates the environment, nwc decodes with it,
// and after Close the host's environment is still there and still works.
func TestHostEnvironment(t *testing.T) {
	requireORT(t)
	if os.Getenv("NWC_HOST_ENV_CHILD") == "1" {
		hostChild(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHostEnvironment$", "-test.v")
	cmd.Env = append(os.Environ(), "NWC_HOST_ENV_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "host environment kept") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func hostChild(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join("testdata", "tiny-nwc.nwc")
	// No environment yet: nwc must not create one.
	m, err := plugin.Open(ctx, path, plugin.WithHostEnvironment(), plugin.WithPrefetch(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadTensor(ctx, "blk.0.attn_q.weight", plugin.F32, nil); !errors.Is(err, ortenv.ErrNotInitialized) {
		t.Fatalf("before the host initialized: %v, want ErrNotInitialized", err)
	}
	m.Close()
	if ort.IsInitialized() {
		t.Fatal("nwc initialized ONNX Runtime although told the host owns it")
	}
	// The host (hugot, or its own sessions) creates the environment.
	ort.SetSharedLibraryPath(ortenv.DefaultLibrary())
	if err := ort.InitializeEnvironment(); err != nil {
		t.Fatal(err)
	}
	m, err = plugin.Open(ctx, path, plugin.WithHostEnvironment())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadTensor(ctx, "blk.0.ffn_up.weight", plugin.F32, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if !ort.IsInitialized() {
		t.Fatal("nwc destroyed the host's environment")
	}
	so, err := ort.NewSessionOptions() // the host's environment still works
	if err != nil {
		t.Fatal(err)
	}
	so.Destroy()
	if err := ort.DestroyEnvironment(); err != nil {
		t.Fatal(err)
	}
	t.Log("host environment kept")
}
