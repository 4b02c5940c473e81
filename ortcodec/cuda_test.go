//go:build cgo

package ortcodec_test

// CPU vs CUDA: the decoder networks of every shipped codec, and whole .nwc
// files, decoded through ONNX Runtime's CPU and CUDA providers must agree
// within cudaRelTol (docs/GPU.md). The entropy stage runs on the CPU in
// both cases (integer-exact by construction), so any difference comes from
// the network's float32 arithmetic; TF32 is off (ortenv sets use_tf32=0).
//
// The test needs `make setup-cuda` and a GPU: without them it is skipped
// with the reason, and with NWC_REQUIRE_CUDA=1 it fails instead. It runs in
// a fresh process, since the first ONNX Runtime library a process loads is
// the one it keeps (the other tests of this package load the CPU build).
//
// BenchmarkCUDADecode measures the decoder networks' throughput (weights/s)
// on the GPU over batch sizes and parallel sessions (scripts/gpu-bench.sh).

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec"
)

// cudaRelTol bounds max|cuda - cpu| / max|cpu| over one decoded tensor (or
// one codec's test batch). float32 GEMMs summing in another order differ by
// a few ulps (~1e-7 relative); 1e-4 leaves room for fused kernels, and is
// well under the codecs' own error (~1e-2 of the weights' scale).
const cudaRelTol = 1e-4

const cudaChildEnv = "NWC_CUDA_TEST_CHILD"

// gpuProvider is the provider compared with the CPU: cuda, or cpu when
// NWC_CUDA_TEST_DRY=1 (a run of the test's plumbing on a machine without a
// GPU: run TestCUDAAgreementChild with NWC_CUDA_TEST_CHILD=1 too).
func gpuProvider() string {
	if os.Getenv("NWC_CUDA_TEST_DRY") == "1" {
		return ortenv.ProviderCPU
	}
	return ortenv.ProviderCUDA
}

// requireCUDA skips (or, with NWC_REQUIRE_CUDA=1, fails) when the GPU build
// of ONNX Runtime, the driver or a GPU is missing.
func requireCUDA(tb testing.TB) {
	tb.Helper()
	why := ""
	if _, err := os.Stat(ortenv.CUDALibrary()); err != nil {
		why = fmt.Sprintf("no GPU build of ONNX Runtime at %s (run `make setup-cuda`)", ortenv.CUDALibrary())
	} else if _, err := ortenv.CUDAProbe(); err != nil {
		why = err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("NWC_REQUIRE_CUDA") == "1" {
		tb.Fatalf("NWC_REQUIRE_CUDA=1: %s", why)
	}
	tb.Skipf("CUDA unavailable: %s", why)
}

// TestCUDAAgreement runs TestCUDAAgreementChild in a fresh process.
func TestCUDAAgreement(t *testing.T) {
	requireCUDA(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestCUDAAgreementChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), cudaChildEnv+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("CUDA agreement: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestCUDAAgreementChild") {
		t.Fatal("the child did not pass")
	}
}

// agreement is one comparison, as written to $NWC_CUDA_AGREE_JSON.
type agreement struct {
	What    string  `json:"what"`
	Values  int     `json:"values"`
	MaxAbs  float64 `json:"max_abs_diff"`
	MaxRef  float64 `json:"max_abs_cpu"`
	Rel     float64 `json:"max_rel_diff"` // MaxAbs / MaxRef
	Tol     float64 `json:"tolerance"`
	Pass    bool    `json:"pass"`
	Skipped string  `json:"skipped,omitempty"`
}

func compare(what string, cpu, gpu []float32) agreement {
	a := agreement{What: what, Values: len(cpu), Tol: cudaRelTol}
	for i := range cpu {
		a.MaxAbs = max(a.MaxAbs, math.Abs(float64(gpu[i])-float64(cpu[i])))
		a.MaxRef = max(a.MaxRef, math.Abs(float64(cpu[i])))
	}
	if a.MaxRef > 0 {
		a.Rel = a.MaxAbs / a.MaxRef
	}
	a.Pass = len(cpu) == len(gpu) && a.Rel <= cudaRelTol
	return a
}

// latents returns n chunks of integer latents (what dequantized symbols
// look like: small integers, mostly near 0) and levels 0..3.
func latents(n int, seed uint64) ([]float32, []int64) {
	r := rand.New(rand.NewPCG(seed, 1))
	y := make([]float32, n*ortcodec.D)
	q := make([]int64, n)
	for i := range y {
		y[i] = float32(math.Round(r.NormFloat64() * 3))
	}
	for i := range q {
		q[i] = int64(r.IntN(ortcodec.NumLevels))
	}
	return y, q
}

func TestCUDAAgreementChild(t *testing.T) {
	if os.Getenv(cudaChildEnv) != "1" {
		t.Skip("run by TestCUDAAgreement in a fresh process")
	}
	if err := ortenv.InitProvider(gpuProvider()); err != nil {
		t.Fatal(err)
	}
	t.Logf("ONNX Runtime %s from %s", ortenv.Version(), ortenv.Library())
	ctx := context.Background()
	var all []agreement

	// 1. Every shipped decoder network on the same latents.
	y, q := latents(1<<16, 7)
	fsys := ortcodec.DefaultCodecs()
	codecs := ortcodec.List(fsys)
	if len(codecs) == 0 {
		t.Fatal("no shipped codecs found")
	}
	for _, ci := range codecs {
		var out [2][]float32
		for i, p := range []string{ortenv.ProviderCPU, gpuProvider()} {
			c, err := ortcodec.Load(fsys, ci.Name, ortcodec.WithProvider(p), ortcodec.WithDecoderOnly(), ortcodec.WithBatch(16384))
			if err != nil {
				t.Fatalf("%s on %s: %v", ci.Name, p, err)
			}
			out[i], err = c.Decode(ctx, y, q)
			if cerr := c.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				t.Fatalf("%s on %s: decode: %v", ci.Name, p, err)
			}
		}
		all = append(all, compare("decoder "+ci.Name+" (65536 chunks)", out[0], out[1]))
	}

	// 2. Whole files: entropy decoding (CPU), network (CPU vs CUDA), rescale.
	files := []string{filepath.Join("..", "plugin", "testdata", "tiny-nwc.nwc")}
	if extra := os.Getenv("NWC_CUDA_AGREE_FILES"); extra != "" {
		files = append(files, filepath.SplitList(extra)...)
	}
	for _, f := range files {
		all = append(all, compareFile(t, f)...)
	}

	failed := 0
	for _, a := range all {
		t.Logf("%-60s values %9d  max|cpu| %.4g  max|diff| %.3g  rel %.3g (tol %.0e) pass %v",
			a.What, a.Values, a.MaxRef, a.MaxAbs, a.Rel, a.Tol, a.Pass)
		if !a.Pass {
			failed++
		}
	}
	if p := os.Getenv("NWC_CUDA_AGREE_JSON"); p != "" {
		b, _ := json.MarshalIndent(all, "", "  ")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Error(err)
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d CPU/CUDA comparisons exceed the relative tolerance %.0e", failed, len(all), cudaRelTol)
	}
}

// compareFile decodes every tensor of the .nwc file f with both providers.
func compareFile(t *testing.T, f string) []agreement {
	var srcs [2]tensor.Source
	for i, p := range []string{ortenv.ProviderCPU, gpuProvider()} {
		s, _, err := loader.Open(f, codec.Env{Provider: p})
		if err != nil {
			t.Fatalf("%s on %s: %v", f, p, err)
		}
		defer s.Close()
		srcs[i] = s
	}
	var out []agreement
	for _, ti := range srcs[0].Tensors() {
		cpu, err := srcs[0].ReadFloat32(ti.Name, nil)
		if err != nil {
			t.Fatalf("%s: %s on cpu: %v", f, ti.Name, err)
		}
		gpu, err := srcs[1].ReadFloat32(ti.Name, nil)
		if err != nil {
			t.Fatalf("%s: %s on %s: %v", f, ti.Name, gpuProvider(), err)
		}
		out = append(out, compare(filepath.Base(f)+": "+ti.Name, cpu, gpu))
	}
	return out
}

// BenchmarkCUDADecode: weights/s of each shipped decoder network on the
// provider $NWC_BENCH_PROVIDER (default cuda), for batch sizes
// $NWC_BENCH_BATCHES (default 65536,262144,1048576 chunks of 16 weights)
// and parallel sessions $NWC_BENCH_SESSIONS (default 1,2,4). Each operation
// decodes 4 batches' worth of chunks.
func BenchmarkCUDADecode(b *testing.B) {
	provider := os.Getenv("NWC_BENCH_PROVIDER")
	if provider == "" {
		provider = ortenv.ProviderCUDA
	}
	if provider == ortenv.ProviderCUDA {
		requireCUDA(b)
	}
	if err := ortenv.InitProvider(provider); err != nil {
		b.Fatal(err)
	}
	batches := intList(b, "NWC_BENCH_BATCHES", "65536,262144,1048576")
	sessions := intList(b, "NWC_BENCH_SESSIONS", "1,2,4")
	fsys := ortcodec.DefaultCodecs()
	names := os.Getenv("NWC_BENCH_CODECS")
	for _, ci := range ortcodec.List(fsys) {
		if names != "" && !strings.Contains(","+names+",", ","+ci.Name+",") {
			continue
		}
		for _, batch := range batches {
			y, q := latents(4*batch, 3)
			for _, s := range sessions {
				b.Run(fmt.Sprintf("codec=%s/batch=%d/sessions=%d", ci.Name, batch, s), func(b *testing.B) {
					c, err := ortcodec.Load(fsys, ci.Name, ortcodec.WithProvider(provider), ortcodec.WithDecoderOnly(),
						ortcodec.WithBatch(batch), ortcodec.WithSessions(s))
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					ctx := context.Background()
					if _, err := c.Decode(ctx, y[:batch*ortcodec.D], q[:batch]); err != nil { // warm-up
						b.Fatal(err)
					}
					b.SetBytes(int64(len(y) * 4))
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						if _, err := c.Decode(ctx, y, q); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(len(y))*float64(b.N)/b.Elapsed().Seconds(), "weights/s")
				})
			}
		}
	}
}

func intList(tb testing.TB, env, def string) []int {
	s := os.Getenv(env)
	if s == "" {
		s = def
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			tb.Fatalf("%s: bad value %q", env, f)
		}
		out = append(out, n)
	}
	return out
}
