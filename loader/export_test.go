package loader

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/internal/tokentest"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// exportCfg: a tiny Llama (2 layers, d=64, 4 heads / 2 kv heads of 16,
// ffn 96) with the tokentest vocabulary; rows are multiples of 32 (Q8_0).
func exportCfg(vocab int) arch.Config {
	return arch.Config{Arch: "llama", Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, HeadDim: 16, FFN: 96,
		Vocab: vocab, RopeTheta: 10000, RMSEps: 1e-5, Naming: arch.NamingGGUF}
}

// tinyLlamaGGUF is an in-memory F32 Llama in llama.cpp naming with GGUF
// metadata (architecture, tokenizer, chat template) as its asset.
func tinyLlamaGGUF(t testing.TB, seed int64) (*memSource, []gguf.KV) {
	t.Helper()
	v := tokentest.NewTinyVocab()
	c := exportCfg(len(v.Tokens))
	u32 := func(x int) gguf.Value { return tokentest.U32(uint32(x)) }
	f32 := func(x float64) gguf.Value { return gguf.Value{Type: gguf.ValueFloat32, V: float32(x)} }
	kvs := v.KVs("smollm",
		gguf.KV{Key: "general.name", Value: tokentest.Str("tiny")},
		gguf.KV{Key: "general.file_type", Value: u32(3)},
		gguf.KV{Key: "llama.block_count", Value: u32(c.Layers)},
		gguf.KV{Key: "llama.context_length", Value: u32(256)},
		gguf.KV{Key: "llama.embedding_length", Value: u32(c.Hidden)},
		gguf.KV{Key: "llama.feed_forward_length", Value: u32(c.FFN)},
		gguf.KV{Key: "llama.attention.head_count", Value: u32(c.Heads)},
		gguf.KV{Key: "llama.attention.head_count_kv", Value: u32(c.KVHeads)},
		gguf.KV{Key: "llama.rope.freq_base", Value: f32(c.RopeTheta)},
		gguf.KV{Key: "llama.attention.layer_norm_rms_epsilon", Value: f32(c.RMSEps)},
		gguf.KV{Key: "llama.rope.dimension_count", Value: u32(c.HeadDim)},
		gguf.KV{Key: "tokenizer.chat_template", Value: tokentest.Str("{% for m in messages %}{{ m['content'] }}{% endfor %}")},
	)
	meta, err := gguf.MarshalMetadataJSON(kvs)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	m := &memSource{assets: []tensor.Asset{{Name: gguf.MetadataAsset, Data: meta}}}
	add := func(name string, shape ...int64) {
		n := tensor.NumElements(shape)
		f := make([]float32, n)
		for i := range f {
			f[i] = float32(rng.NormFloat64() * 0.5)
		}
		m.add(name, tensor.F32, shape, tensor.F32Bytes(f, nil))
	}
	D, F, V := int64(c.Hidden), int64(c.FFN), int64(c.Vocab)
	qd, kd := int64(c.Heads*c.HeadDim), int64(c.KVHeads*c.HeadDim)
	add("token_embd.weight", V, D)
	for l := 0; l < c.Layers; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", D)
		add(p+"attn_q.weight", qd, D)
		add(p+"attn_k.weight", kd, D)
		add(p+"attn_v.weight", kd, D)
		add(p+"attn_output.weight", D, qd)
		add(p+"ffn_norm.weight", D)
		add(p+"ffn_gate.weight", F, D)
		add(p+"ffn_up.weight", F, D)
		add(p+"ffn_down.weight", D, F)
	}
	add("output_norm.weight", D)
	return m, kvs
}

// tinyLlamaNWC compresses tinyLlamaGGUF into a real .nwc file (rtn-g128 at 4
// bits for the block linears) and opens it.
func tinyLlamaNWC(t *testing.T) (tensor.Source, []gguf.KV) {
	t.Helper()
	src, kvs := tinyLlamaGGUF(t, 1)
	path := filepath.Join(t.TempDir(), "tiny.nwc")
	if _, err := Compress(context.Background(), src, path, CompressOptions{Codec: "rtn-g128", Bits: 4}); err != nil {
		t.Fatal(err)
	}
	nf, _, err := Open(path, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nf.Close() })
	return nf, kvs
}

func readAllF32(t *testing.T, src tensor.Source) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	for _, ti := range src.Tensors() {
		v, err := src.ReadFloat32(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		out[ti.Name] = v
	}
	return out
}

func TestExportGGUFRoundTrip(t *testing.T) {
	src, kvs := tinyLlamaNWC(t)
	want := readAllF32(t, src)
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16, tensor.Q8_0} {
		t.Run(dt.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "out.gguf")
			if err := WriteGGUFFile(context.Background(), src, path, ExportOptions{DType: dt}); err != nil {
				t.Fatal(err)
			}
			g, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			// Metadata: the source's, general.file_type set.
			ftype := map[tensor.DType]uint32{tensor.F32: 0, tensor.F16: 1, tensor.BF16: 32, tensor.Q8_0: 7}[dt]
			wantKV := setKV(kvs, "general.file_type", gguf.Value{Type: gguf.ValueUint32, V: ftype})
			if dt == tensor.Q8_0 {
				wantKV = setKV(wantKV, "general.quantization_version", gguf.Value{Type: gguf.ValueUint32, V: uint32(2)})
			}
			if !reflect.DeepEqual(g.Metadata(), wantKV) {
				t.Errorf("metadata differs:\n got %v\nwant %v", g.Metadata(), wantKV)
			}
			if st, _ := os.Stat(path); st.Size() != mustPlan(t, src, dt).Size() {
				t.Errorf("file is %d bytes, planned %d", st.Size(), mustPlan(t, src, dt).Size())
			}
			for _, ti := range g.TensorInfos() {
				w := want[ti.Name]
				got, err := g.ReadFloat32(ti.Name, nil)
				if err != nil {
					t.Fatal(err)
				}
				if len(ti.Shape) == 1 && ti.DType != tensor.F32 {
					t.Errorf("%s: 1-D tensor stored as %s, want F32", ti.Name, ti.DType)
				}
				if len(ti.Shape) == 2 && ti.DType != dt {
					t.Errorf("%s: stored as %s, want %s", ti.Name, ti.DType, dt)
				}
				for i := range w {
					var ok bool
					switch ti.DType {
					case tensor.F32:
						ok = got[i] == w[i]
					case tensor.F16:
						ok = got[i] == tensor.F16ToF32(tensor.F32ToF16(w[i]))
					case tensor.BF16:
						ok = got[i] == tensor.BF16ToF32(tensor.F32ToBF16(w[i]))
					case tensor.Q8_0:
						blk := w[i/32*32 : i/32*32+32]
						var amax float64
						for _, x := range blk {
							amax = math.Max(amax, math.Abs(float64(x)))
						}
						// half a step, plus the fp16 rounding of the scale times 127
						ok = math.Abs(float64(got[i]-w[i])) <= amax/127*(0.5+127.0/2048)+1e-6
					}
					if !ok {
						t.Fatalf("%s[%d] = %g, want %g (%s)", ti.Name, i, got[i], w[i], ti.DType)
					}
				}
			}
			if len(g.Tensors()) != len(want) {
				t.Errorf("%d tensors, want %d", len(g.Tensors()), len(want))
			}
			// The exported file exports again to the same bytes (io.WriterTo
			// of a planned export).
			if dt == tensor.F32 {
				var a bytes.Buffer
				if _, err := mustPlan(t, g, tensor.F32).WriteTo(&a); err != nil {
					t.Fatal(err)
				}
				b, _ := os.ReadFile(path)
				if !bytes.Equal(a.Bytes(), b) {
					t.Error("re-export of the exported GGUF differs")
				}
			}
		})
	}
}

func mustPlan(t *testing.T, src tensor.Source, dt tensor.DType) *GGUFExport {
	t.Helper()
	e, err := NewGGUFExport(src, ExportOptions{DType: dt})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestExportGGUFErrors(t *testing.T) {
	src, _ := tinyLlamaGGUF(t, 2)
	// The tiny real .nwc has no GGUF metadata.
	tiny, _, err := Open(filepath.Join("..", "plugin", "testdata", "tiny-rtn.nwc"), codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer tiny.Close()
	if _, err := WriteGGUF(context.Background(), tiny, io.Discard, ExportOptions{}); !errors.Is(err, tensor.ErrUnsupported) || !strings.Contains(err.Error(), gguf.MetadataAsset) {
		t.Errorf("no metadata: %v", err)
	}
	if _, err := WriteGGUF(context.Background(), src, io.Discard, ExportOptions{DType: tensor.Q4_0}); !errors.Is(err, tensor.ErrUnsupportedDType) {
		t.Errorf("Q4_0: %v", err)
	}
	// A writer that fails part-way: the error names the tensor and wraps
	// the writer's error.
	e := mustPlan(t, src, tensor.F32)
	boom := errors.New("disk full")
	for _, limit := range []int64{10, e.layout.HeaderSize + 100, e.Size() - 1} {
		_, err := e.Write(context.Background(), &failWriter{limit: limit, err: boom})
		if !errors.Is(err, boom) {
			t.Errorf("limit %d: %v", limit, err)
		}
		if limit > e.layout.HeaderSize && !strings.Contains(err.Error(), "tensor") {
			t.Errorf("limit %d: error does not name the tensor: %v", limit, err)
		}
	}
	// A failed file write leaves nothing behind and names the file.
	dir := t.TempDir()
	path := filepath.Join(dir, "x.gguf")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteGGUFFile(ctx, src, path, ExportOptions{}); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), path) {
		t.Errorf("cancelled: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
	if err := WriteGGUFFile(context.Background(), src, filepath.Join(dir, "no", "such", "x.gguf"), ExportOptions{}); err == nil || !strings.Contains(err.Error(), "no/such") {
		t.Errorf("missing folder: %v", err)
	}
	// A GGUF cut short is refused by the reader with a clear error.
	var buf bytes.Buffer
	if _, err := e.Write(context.Background(), &buf); err != nil {
		t.Fatal(err)
	}
	if _, err := gguf.NewReader(bytes.NewReader(buf.Bytes()[:buf.Len()-40]), int64(buf.Len()-40), "cut.gguf"); !errors.Is(err, gguf.ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
}

type failWriter struct {
	n, limit int64
	err      error
}

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n+int64(len(p)) > f.limit {
		k := f.limit - f.n
		f.n = f.limit
		return int(k), f.err
	}
	f.n += int64(len(p))
	return len(p), nil
}

// aheadSource records how far reads run ahead of the tensors the writer
// has finished.
type aheadSource struct {
	tensor.Source
	mu       sync.Mutex
	reads    int
	written  func() int
	maxAhead int
}

func (c *aheadSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	c.mu.Lock()
	if a := c.reads - c.written(); a > c.maxAhead {
		c.maxAhead = a
	}
	c.reads++
	c.mu.Unlock()
	return c.Source.ReadRaw(name, dst)
}

// progressWriter counts the tensors fully written from the layout.
type progressWriter struct {
	mu   sync.Mutex
	n    int64
	ends []int64
	done int
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(len(b))
	for p.done < len(p.ends) && p.ends[p.done] <= p.n {
		p.done++
	}
	return len(b), nil
}

func (p *progressWriter) written() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

func TestExportGGUFMemoryBound(t *testing.T) {
	base, _ := tinyLlamaGGUF(t, 3)
	e := mustPlan(t, base, tensor.F32)
	pw := &progressWriter{}
	for i := range e.layout.Offsets {
		pw.ends = append(pw.ends, e.layout.HeaderSize+e.layout.Offsets[i]+e.layout.Sizes[i])
	}
	for _, ahead := range []int{1, 3} {
		pw.n, pw.done = 0, 0
		cs := &aheadSource{Source: base, written: pw.written}
		if _, err := WriteGGUF(context.Background(), cs, pw, ExportOptions{Ahead: ahead}); err != nil {
			t.Fatal(err)
		}
		// The writer works on tensor `written`; at most Ahead more are read.
		if cs.maxAhead > ahead+1 {
			t.Errorf("ahead %d: reads ran %d tensors ahead of the writer (%d tensors in all)", ahead, cs.maxAhead, len(base.infos))
		}
		if cs.reads != len(base.infos) {
			t.Errorf("ahead %d: %d reads for %d tensors", ahead, cs.reads, len(base.infos))
		}
	}
}

func TestExportHF(t *testing.T) {
	src, _ := tinyLlamaNWC(t)
	want := readAllF32(t, src)
	dir := filepath.Join(t.TempDir(), "hf")
	if err := WriteHF(context.Background(), src, dir, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	m, format, err := Open(dir, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if format != FormatSafetensors {
		t.Errorf("format %s", format)
	}
	cfg, err := arch.ConfigFromSource(m)
	if err != nil {
		t.Fatal(err)
	}
	wantCfg, _ := arch.ConfigFromSource(src)
	wantCfg.Naming = arch.NamingHF
	if float32(cfg.RMSEps) == float32(wantCfg.RMSEps) {
		wantCfg.RMSEps = cfg.RMSEps // written as the float32's shortest decimal
	}
	if cfg != wantCfg {
		t.Errorf("config %+v, want %+v", cfg, wantCfg)
	}
	// Names and shapes: Hugging Face's.
	var names []string
	for _, ti := range m.Tensors() {
		names = append(names, ti.Name)
		if ti.DType != tensor.F32 {
			t.Errorf("%s: %s", ti.Name, ti.DType)
		}
	}
	for _, n := range []string{"model.embed_tokens.weight", "model.norm.weight", "model.layers.1.self_attn.q_proj.weight",
		"model.layers.0.self_attn.k_proj.weight", "model.layers.0.mlp.down_proj.weight", "model.layers.1.post_attention_layernorm.weight"} {
		if _, ok := tensor.Find(m.Tensors(), n); !ok {
			t.Errorf("no tensor %s in %v", n, names)
		}
	}
	if ti, _ := tensor.Find(m.Tensors(), "model.layers.0.mlp.down_proj.weight"); !reflect.DeepEqual(ti.Shape, []int64{64, 96}) {
		t.Errorf("down_proj shape %v", ti.Shape)
	}
	if len(m.Tensors()) != len(want) {
		t.Errorf("%d tensors, want %d", len(m.Tensors()), len(want))
	}
	// Values: equal, q/k rows un-permuted (HF row i*hd/2+j is GGUF row 2j+i).
	for gname, w := range want {
		hname, part, ok := ggufToHFName(gname)
		if !ok {
			t.Fatalf("no HF name for %s", gname)
		}
		got, err := m.ReadFloat32(hname, nil)
		if err != nil {
			t.Fatal(err)
		}
		ti, _ := tensor.Find(src.Tensors(), gname)
		heads := qkHeads(cfg, part)
		for r := 0; r < int(ti.Shape[0]); r++ {
			sr := r
			if heads > 0 {
				hd := int(ti.Shape[0]) / heads
				h, k := r/hd, r%hd
				i, j := k/(hd/2), k%(hd/2)
				sr = h*hd + 2*j + i
			}
			in := len(w) / int(ti.Shape[0])
			if !reflect.DeepEqual(got[r*in:(r+1)*in], w[sr*in:(sr+1)*in]) {
				t.Fatalf("%s row %d != %s row %d", hname, r, gname, sr)
			}
		}
	}
	// The folder's files.
	var tc map[string]any
	data, err := os.ReadFile(filepath.Join(dir, HFTokenizerConfigFile))
	if err != nil || json.Unmarshal(data, &tc) != nil {
		t.Fatal(err)
	}
	if tc["chat_template"] != "{% for m in messages %}{{ m['content'] }}{% endfor %}" || tc["bos_token"] != "<|im_start|>" || tc["eos_token"] != "<|endoftext|>" {
		t.Errorf("tokenizer_config.json: %v", tc)
	}
	tok, origin, err := tokjson.JSONForSource(m)
	if err != nil || origin.Kind != "asset" || !json.Valid(tok) {
		t.Errorf("tokenizer: %v %v", origin, err)
	}
	for _, f := range []string{HFConfigFile, HFGenerationConfigFile, HFWeightsFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	// HF folder -> GGUF: llama.cpp names, q/k rows permuted back, the
	// tokenizer converted back to tokenizer.ggml.* (it rebuilds the same
	// tokenizer.json), metadata from config.json.
	var direct, round bytes.Buffer
	if _, err := WriteGGUF(context.Background(), src, &direct, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteGGUF(context.Background(), m, &round, ExportOptions{}); err != nil {
		t.Fatal(err)
	}
	g1, err := gguf.NewReader(bytes.NewReader(direct.Bytes()), int64(direct.Len()), "direct.gguf")
	if err != nil {
		t.Fatal(err)
	}
	g2, err := gguf.NewReader(bytes.NewReader(round.Bytes()), int64(round.Len()), "round.gguf")
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range g1.Tensors() {
		a, _ := g1.ReadRaw(ti.Name, nil)
		b, err := g2.ReadRaw(ti.Name, nil)
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: differs after GGUF -> HF -> GGUF (%v)", ti.Name, err)
		}
	}
	c1, _ := arch.ConfigFromGGUF(g1.Metadata())
	c2, err := arch.ConfigFromGGUF(g2.Metadata())
	c1.Vocab, c2.Vocab = 0, 0 // the source's metadata has no llama.vocab_size
	if err != nil || c1 != c2 {
		t.Errorf("config after the round trip %+v (%v), want %+v", c2, err, c1)
	}
	t1, err1 := tokjson.FromGGUFMetadata(g2.Metadata())
	if err1 != nil || !bytes.Equal(t1, tok) {
		t.Errorf("tokenizer.json rebuilt from the round-tripped GGUF differs (%v)", err1)
	}
	for _, k := range []string{"tokenizer.chat_template", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token"} {
		v1, ok1 := g1.Get(k)
		v2, ok2 := g2.Get(k)
		if !ok1 || !ok2 || !reflect.DeepEqual(v1, v2) {
			t.Errorf("%s: %v, want %v", k, v2, v1)
		}
	}
	// Exporting again into the non-empty folder is refused, untouched.
	if err := WriteHF(context.Background(), src, dir, ExportOptions{}); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("non-empty target: %v", err)
	}
	if err := WriteHF(context.Background(), src, filepath.Join(t.TempDir(), "q"), ExportOptions{DType: tensor.Q8_0}); !errors.Is(err, tensor.ErrUnsupportedDType) {
		t.Errorf("Q8_0 safetensors: %v", err)
	}
}

func TestHFNamesRoundTrip(t *testing.T) {
	for _, n := range []string{"token_embd.weight", "output.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.12.ffn_down.weight", "blk.3.attn_output.weight"} {
		hf, _, ok := ggufToHFName(n)
		if !ok {
			t.Fatalf("%s: no HF name", n)
		}
		back, _, ok := hfToGGUFName(hf)
		if !ok || back != n {
			t.Errorf("%s -> %s -> %s", n, hf, back)
		}
	}
	for _, n := range []string{"blk.x.attn_q.weight", "blk.01.attn_q.weight", "blk.0.attn_q.bias", "rope_freqs.weight", "blk.0.nope.weight"} {
		if _, _, ok := ggufToHFName(n); ok {
			t.Errorf("%s: mapped", n)
		}
	}
	w := make([]float32, 4*8*3)
	for i := range w {
		w[i] = float32(i)
	}
	if got := arch.PermuteQK(arch.PermuteQK(w, 32, 3, 4, true), 32, 3, 4, false); !reflect.DeepEqual(got, w) {
		t.Error("permute(unpermute(w)) != w")
	}
}

func TestQuantizeQ8_0MatchesDequant(t *testing.T) {
	x := []float32{0, 1, -1, 0.5, -0.25, 127, -3, 2.5}
	for len(x) < 64 {
		x = append(x, float32(len(x))*0.1-3)
	}
	q, err := gguf.QuantizeQ8_0(x, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 2*34 {
		t.Fatalf("%d bytes", len(q))
	}
	d := tensor.F16ToF32(binary.LittleEndian.Uint16(q))
	if want := tensor.F16ToF32(tensor.F32ToF16(127.0 / 127)); d != want {
		t.Errorf("scale %g, want %g", d, want)
	}
	if int8(q[2+5]) != 127 || int8(q[2+2]) != -1 || int8(q[2+3]) != 1 { // 0.5 rounds away from zero
		t.Errorf("quants %v", q[2:10])
	}
	back, err := tensor.ToFloat32(tensor.Q8_0, q, 64, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range x {
		if math.Abs(float64(back[i]-x[i])) > 0.51*float64(d)+1e-6 && i < 32 {
			t.Errorf("x[%d]=%g back %g", i, x[i], back[i])
		}
	}
	if _, err := gguf.QuantizeQ8_0(x[:33], nil); !errors.Is(err, tensor.ErrShape) {
		t.Errorf("33 values: %v", err)
	}
	zero, _ := gguf.QuantizeQ8_0(make([]float32, 32), nil)
	if !bytes.Equal(zero, make([]byte, 34)) {
		t.Errorf("zeros: %v", zero)
	}
}

// TestExportGGUFGemma3: a model that came from a GGUF file exports whatever
// its architecture (here the real gemma-3-270m, q/k norms and all): the same
// metadata but general.file_type, the same tensor names and order, and F32
// tensors equal to the source's dequantized values. (scripts/check-export-gguf.sh
// finds the F32 file byte-identical to llama-quantize's F32 of the same GGUF.)
func TestExportGGUFGemma3(t *testing.T) {
	tensortest.RequireModel(t, "gemma3-270m")
	src, _, err := Open("gemma3-270m", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	out := filepath.Join(t.TempDir(), "g.gguf")
	if err := WriteGGUFFile(context.Background(), src, out, ExportOptions{DType: tensor.F32}); err != nil {
		t.Fatal(err)
	}
	back, _, err := Open(out, codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	meta := func(s tensor.Source) map[string]any {
		t.Helper()
		for _, a := range s.Assets() {
			if a.Name == gguf.MetadataAsset {
				kvs, err := gguf.ParseMetadataJSON(a.Data)
				if err != nil {
					t.Fatal(err)
				}
				m := map[string]any{}
				for _, kv := range kvs {
					if kv.Key != "general.file_type" {
						m[kv.Key] = kv.Value
					}
				}
				return m
			}
		}
		t.Fatalf("no %s", gguf.MetadataAsset)
		return nil
	}
	if a, b := meta(src), meta(back); !reflect.DeepEqual(a, b) || a["general.architecture"].(gguf.Value).V != "gemma3" {
		t.Errorf("metadata differs: %d keys vs %d", len(a), len(b))
	}
	st, bt := src.Tensors(), back.Tensors()
	if len(st) != len(bt) {
		t.Fatalf("%d tensors exported, want %d", len(bt), len(st))
	}
	var raw, want []float32
	for i, ti := range st {
		if bt[i].Name != ti.Name || !reflect.DeepEqual(bt[i].Shape, ti.Shape) || bt[i].DType != tensor.F32 {
			t.Fatalf("tensor %d: %s %v %s, want %s %v F32", i, bt[i].Name, bt[i].Shape, bt[i].DType, ti.Name, ti.Shape)
		}
		if want, err = src.ReadFloat32(ti.Name, want); err != nil {
			t.Fatal(err)
		}
		if raw, err = back.ReadFloat32(ti.Name, raw); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(raw, want) {
			t.Fatalf("tensor %s: exported values differ from the source's", ti.Name)
		}
	}
}
