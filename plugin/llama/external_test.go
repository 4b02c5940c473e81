//go:build cgo

package llama

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"testing"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/internal/ortenv"
	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx"
	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// emptyDir fails the test when dir holds anything.
func emptyDir(t *testing.T, dir, when string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) > 0 {
		t.Fatalf("%s: %s holds %d entries (%s, ...): temporary weights left behind", when, dir, len(ents), ents[0].Name())
	}
}

// TestExternalWeights: weights given to ONNX Runtime as external data give
// the same logits as embedded ones (scoring and KV-cache graphs, both
// attentions, tied and untied heads); the temporary file is gone once the
// model is open, after Close, and after a failed open.
func TestExternalWeights(t *testing.T) {
	orttest.Require(t)
	gqaCfg := tinyCfg
	gqaCfg.Hidden, gqaCfg.HeadDim = 64, 16
	for _, tc := range []struct {
		tied bool
		attn string
	}{{true, AttentionStandard}, {false, AttentionStandard}, {false, AttentionGQA}} {
		c := tinyCfg
		if tc.attn == AttentionGQA {
			c = gqaCfg
		}
		t.Run(fmt.Sprintf("tied=%v/%s", tc.tied, tc.attn), func(t *testing.T) {
			w := tinyWeights(c, tc.tied, 11)
			toks := tinyTokens(9, c.Vocab, 3)
			tmp := t.TempDir()
			var out [2][]float32
			for i, mode := range []string{WeightsEmbedded, WeightsExternal} {
				// ExternalMin 1: every tiny weight goes to the file.
				opts := Options{Threads: 1, Weights: mode, TempDir: tmp, Build: BuildOptions{Attention: tc.attn, ExternalMin: 1}}
				m, err := OpenSource(ggufSource(t, c, w), opts)
				if err != nil {
					t.Fatal(err)
				}
				if m.ExternalWeights() != (mode == WeightsExternal) {
					t.Fatalf("%s: ExternalWeights() = %v", mode, m.ExternalWeights())
				}
				emptyDir(t, tmp, "after open")
				out[i], err = m.Logits(context.Background(), toks)
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
				emptyDir(t, tmp, "after Close")
			}
			if !slices.Equal(out[0], out[1]) {
				d, a := maxRelDiff(out[1], f64(out[0]))
				t.Fatalf("external weights: logits differ from embedded ones (max|diff| %g, max|logit| %g)", d, a)
			}
			// The KV-cache graph with external weights: prefill equals scoring.
			d, err := OpenDecoderSource(ggufSource(t, c, w), Options{Threads: 1, Weights: WeightsExternal, TempDir: tmp, Build: BuildOptions{Attention: tc.attn, ExternalMin: 1}})
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			emptyDir(t, tmp, "after OpenDecoderSource")
			cache := d.NewCache()
			defer cache.Close()
			got, err := cache.Forward(context.Background(), toks)
			if err != nil {
				t.Fatal(err)
			}
			if dd, a := maxRelDiff(got, f64(out[0])); dd > 1e-5*a {
				t.Fatalf("decoder with external weights: max|diff| %g vs %g", dd, a)
			}
		})
	}
}

func f64(v []float32) []float64 {
	r := make([]float64, len(v))
	for i, x := range v {
		r[i] = float64(x)
	}
	return r
}

// TestExternalWeightsFailure: an open that fails after the weights file was
// started leaves nothing behind; a bad mode or folder is an error.
func TestExternalWeightsFailure(t *testing.T) {
	orttest.Require(t)
	tmp := t.TempDir()
	w := tinyWeights(tinyCfg, true, 5)
	delete(w, "blk.1.ffn_down.weight") // read last: the file has most weights by then
	_, err := OpenSource(ggufSource(t, tinyCfg, w), Options{Threads: 1, Weights: WeightsExternal, TempDir: tmp, Build: BuildOptions{ExternalMin: 1}})
	if !errors.Is(err, tensor.ErrNotFound) {
		t.Fatalf("missing weight: err %v, want tensor.ErrNotFound", err)
	}
	emptyDir(t, tmp, "after a failed build")

	// A graph ONNX Runtime rejects (an unknown operator) fails at session
	// creation: nothing left either.
	w = tinyWeights(tinyCfg, true, 5)
	m := &Model{session{cfg: tinyCfg}}
	err = m.open(Options{Threads: 1, Weights: WeightsExternal, TempDir: tmp}, 1, []string{InputIDs}, []string{OutputName},
		func(provider string, sink onnx.ExternalSink) ([]byte, error) {
			g := onnx.NewGraph("bad")
			g.SetExternal(sink, 1)
			x := g.Input(InputIDs, onnx.Float, onnx.D(4))
			wt := g.InitFloat32("w", []int64{4}, []float32{1, 2, 3, 4})
			g.NodeOut("NoSuchOp", []string{x, wt}, []string{OutputName})
			g.Output(OutputName, onnx.Float, onnx.D(4))
			return g.Marshal()
		})
	if err == nil {
		m.Close()
		t.Fatal("a graph with an unknown operator opened")
	}
	emptyDir(t, tmp, "after a failed session")

	if _, err := OpenSource(ggufSource(t, tinyCfg, w), Options{Weights: "mmap"}); err == nil {
		t.Fatal("unknown Weights mode accepted")
	}
	if _, err := OpenSource(ggufSource(t, tinyCfg, w), Options{Weights: WeightsExternal, TempDir: tmp + "/missing/dir"}); err == nil {
		t.Fatal("missing TempDir accepted")
	}
}

// TestBuildExternalOver2GB: Build accepts weights whose float32 total is
// over protobuf's 2 GB limit when they go to an external sink (counted, not
// kept: the test holds one layer's weights at a time), and the protobuf
// stays small.
func TestBuildExternalOver2GB(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 2.2 GB of weights (one tensor at a time)")
	}
	c := tinyCfg
	c.Layers, c.Hidden, c.Heads, c.KVHeads, c.HeadDim, c.FFN, c.Vocab = 24, 1024, 16, 16, 64, 6144, 1000
	c.Tied = true
	src := newConstSource(c)
	var sink onnx.DiscardSink
	data, err := Build(c, src, BuildOptions{External: &sink})
	if err != nil {
		t.Fatal(err)
	}
	total := weightBytes(src)
	t.Logf("weights %.2f GB, external %.2f GB, protobuf %d bytes", float64(total)/1e9, float64(sink.Size)/1e9, len(data))
	if total <= onnx.MaxModelBytes || sink.Size < total-1<<20 {
		t.Fatalf("weights %d, external %d: want over 2 GB, nearly all external", total, sink.Size)
	}
	if len(data) > 1<<20 {
		t.Fatalf("protobuf is %d bytes", len(data))
	}
	m, err := onnx.UnmarshalModel(data)
	if err != nil {
		t.Fatal(err)
	}
	ext := 0
	for _, in := range m.GetGraph().GetInitializer() {
		if in.GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
			ext++
		}
	}
	if want := 1 + 7*c.Layers; ext != want { // embedding + 7 matrices per layer (tied head)
		t.Fatalf("%d external initializers, want %d", ext, want)
	}
}

// constSource is a GGUF-named source whose every tensor reads as a constant
// (nothing is stored).
type constSource struct{ infos []tensor.Info }

func newConstSource(c arch.Config) *constSource {
	s := &constSource{}
	n := names(c)
	for _, name := range n.readOrder(c) {
		if name == n.head && c.Tied {
			continue
		}
		shape := shapeOf(c, name)
		s.infos = append(s.infos, tensor.Info{Name: name, DType: tensor.F32, Shape: shape, Size: 4 * tensor.NumElements(shape)})
	}
	return s
}

func (s *constSource) Tensors() []tensor.Info { return s.infos }
func (s *constSource) Assets() []tensor.Asset { return nil }
func (s *constSource) Close() error           { return nil }
func (s *constSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	return nil, fmt.Errorf("constSource: no raw data: %w", tensor.ErrUnsupported)
}

func (s *constSource) ReadFloat32(name string, dst []float32) ([]float32, error) {
	info, ok := tensor.Find(s.infos, name)
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, tensor.ErrNotFound)
	}
	n := int(info.NumElements())
	if cap(dst) < n {
		dst = make([]float32, n)
	}
	dst = dst[:n]
	for i := range dst {
		dst[i] = 0.01
	}
	return dst, nil
}

// TestFloat16Graph: BuildOptions.Float16 stores the matrices as float16
// (half the bytes) and keeps the graph valid; where this ONNX Runtime's CPU
// provider has float16 MatMul the logits agree with float32 to float16
// precision. Open on the CPU ignores Float16 (float32 logits).
func TestFloat16Graph(t *testing.T) {
	orttest.Require(t)
	w := tinyWeights(tinyCfg, false, 13)
	toks := tinyTokens(7, tinyCfg.Vocab, 2)
	data16, err := Build(tinyCfg, ggufSource(t, tinyCfg, w), BuildOptions{Float16: true})
	if err != nil {
		t.Fatal(err)
	}
	m16, err := onnx.UnmarshalModel(data16)
	if err != nil {
		t.Fatal(err)
	}
	var n16, n32 int
	for _, in := range m16.GetGraph().GetInitializer() {
		switch in.GetDataType() {
		case onnx.Float16:
			n16++
		case onnx.Float:
			if len(in.GetDims()) == 2 {
				n32++
			}
		}
	}
	if want := 2 + 7*tinyCfg.Layers; n16 != want || n32 != 1 { // embedding, head, 7 per layer; rope.inv_freq [1, hd] stays float32
		t.Fatalf("float16 graph: %d float16 matrices (want %d), %d float32 matrices (want 1)", n16, want, n32)
	}
	so, err := ortenv.SessionOptions(ortenv.ProviderCPU, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer so.Destroy()
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data16, []string{InputIDs}, []string{OutputName}, so)
	if err != nil {
		t.Logf("this ONNX Runtime's CPU provider does not run the float16 graph: %v", err)
	} else {
		defer sess.Destroy()
		ids := make([]int64, len(toks))
		for i, v := range toks {
			ids[i] = int64(v)
		}
		in, err := ort.NewTensor(ort.NewShape(1, int64(len(ids))), ids)
		if err != nil {
			t.Fatal(err)
		}
		defer in.Destroy()
		logits := make([]float32, len(toks)*tinyCfg.Vocab)
		out, err := ort.NewTensor(ort.NewShape(1, int64(len(toks)), int64(tinyCfg.Vocab)), logits)
		if err != nil {
			t.Fatal(err)
		}
		defer out.Destroy()
		if err := sess.Run([]ort.Value{in}, []ort.Value{out}); err != nil {
			t.Fatal(err)
		}
		d, a := maxRelDiff(logits, refForward(tinyCfg, w, toks))
		t.Logf("float16 weights on the CPU: max|diff| %.3g, max|logit| %.3g", d, a)
		if d > 2e-2*a || math.IsNaN(d) {
			t.Fatalf("float16 logits: max|diff| %g > 2e-2 * %g", d, a)
		}
	}
	// Open on the CPU keeps float32 whatever Float16 says.
	m, err := OpenSource(ggufSource(t, tinyCfg, w), Options{Threads: 1, Build: BuildOptions{Float16: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got, err := m.Logits(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	if d, a := maxRelDiff(got, refForward(tinyCfg, w, toks)); d > 1e-4*a {
		t.Fatalf("Open with Float16 on the CPU: max|diff| %g > 1e-4 * %g", d, a)
	}
}

// TestSmolLM2ExternalWeights: on the real model, external weights (the
// default at its size) give exactly the embedded path's logits.
func TestSmolLM2ExternalWeights(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the model twice")
	}
	requireSmolLM2(t)
	var out [2][]float32
	for i, mode := range []string{WeightsEmbedded, WeightsAuto} {
		m, err := Open("smollm2-135m", Options{Threads: 2, Weights: mode})
		if err != nil {
			t.Fatal(err)
		}
		if m.ExternalWeights() != (i == 1) {
			t.Fatalf("%q: ExternalWeights() = %v", mode, m.ExternalWeights())
		}
		out[i], err = m.Logits(context.Background(), sentenceIDs)
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(out[0], out[1]) {
		d, a := maxRelDiff(out[1], f64(out[0]))
		t.Fatalf("external vs embedded: max|diff| %g, max|logit| %g", d, a)
	}
}
