package gguf

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/loader/tensor"
)

// Cross-checks against llama.cpp's own Python library (PyPI gguf) through
// scripts/gguf_reference.py.
//
// Environment:
//   NWC_CACHE           cache root (default ~/.cache/nwc)
//   NWC_SMOLLM2_GGUF    the SmolLM2-135M-Instruct Q4_1 GGUF (default
//                       $NWC_CACHE/models/smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf)
//   NWC_CHECK_PYTHON    python with numpy+gguf (default $NWC_CACHE/venv-check/bin/python)
//   NWC_REQUIRE_MODELS  1: a missing model or python fails instead of skipping
//                       (and the slow Gemma-3 check runs)
//   NWC_GEMMA3_GGUF     the Gemma-3-270M Q4_K_M GGUF (default
//                       $NWC_CACHE/models/gemma3-270m/gemma-3-270m-q4_k_m.gguf)
//   NWC_GGUF_GEMMA      1: run the Gemma-3 check

func cacheDir() string {
	if d := os.Getenv("NWC_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "nwc-cache")
	}
	return filepath.Join(home, ".cache", "nwc")
}

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func smollm2Path(t *testing.T) string {
	t.Helper()
	p := os.Getenv("NWC_SMOLLM2_GGUF")
	if p == "" {
		p = filepath.Join(cacheDir(), "models", "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf")
	}
	if _, err := os.Stat(p); err != nil {
		skipOrFail(t, "SmolLM2 GGUF not available (run make setup or set NWC_SMOLLM2_GGUF): %v", err)
	}
	return p
}

func checkPython(t *testing.T) string {
	t.Helper()
	p := os.Getenv("NWC_CHECK_PYTHON")
	if p == "" {
		p = filepath.Join(cacheDir(), "venv-check", "bin", "python")
	}
	if _, err := os.Stat(p); err != nil {
		skipOrFail(t, "reference python not available (run make setup or set NWC_CHECK_PYTHON): %v", err)
	}
	out, err := exec.Command(p, "-c", "import gguf, numpy").CombinedOutput()
	if err != nil {
		skipOrFail(t, "%s cannot import gguf and numpy: %v\n%s", p, err, out)
	}
	return p
}

type refRecord struct {
	Name   string    `json:"name"`
	Type   string    `json:"type"`
	Shape  []int64   `json:"shape"`
	SHA256 string    `json:"sha256"`
	First  []float64 `json:"first"`
}

// runReference runs scripts/gguf_reference.py on model for the named tensors
// (all when names is nil).
func runReference(t *testing.T, python, model string, names []string) map[string]refRecord {
	t.Helper()
	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "gguf_reference.py"))
	if err != nil {
		t.Fatal(err)
	}
	args := []string{script, model, "--json", "-"}
	if names == nil {
		args = append(args, "--all")
	}
	for _, n := range names {
		args = append(args, "-t", n)
	}
	cmd := exec.Command(python, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", python, strings.Join(args, " "), err, stderr.String())
	}
	recs := map[string]refRecord{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r refRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("reference output %q: %v", sc.Text(), err)
		}
		recs[r.Name] = r
	}
	return recs
}

func sha256F32(v []float32) string {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// compareWithReference dequantizes each named tensor in Go and requires the
// float32 bytes to be identical to the reference's.
func compareWithReference(t *testing.T, g *File, recs map[string]refRecord, names []string) {
	t.Helper()
	for _, name := range names {
		ti, ok := g.TensorInfo(name)
		if !ok {
			t.Fatalf("no tensor %q", name)
		}
		r, ok := recs[name]
		if !ok {
			t.Fatalf("reference did not report %q", name)
		}
		if r.Type != ti.Type.String() || !reflect.DeepEqual(r.Shape, ti.Shape) {
			t.Errorf("%s: Go %s %v, reference %s %v", name, ti.Type, ti.Shape, r.Type, r.Shape)
		}
		vals, err := g.ReadFloat32(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256F32(vals)
		if got != r.SHA256 {
			for i, f := range r.First {
				if i < len(vals) && float64(vals[i]) != f {
					t.Errorf("%s: value %d: Go %v, reference %v", name, i, vals[i], f)
					break
				}
			}
			t.Errorf("%s (%s %v): Go sha256 %s, reference %s", name, ti.Type, ti.Shape, got, r.SHA256)
			continue
		}
		t.Logf("%-28s %-5s %-12v sha256 %s: bit-identical", name, ti.Type, ti.Shape, got)
	}
}

func TestSmolLM2Reference(t *testing.T) {
	model := smollm2Path(t)
	python := checkPython(t)
	g, err := Open(model)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// One tensor of each of three different ggml types, preferring these.
	preferred := []string{"blk.0.attn_q.weight", "token_embd.weight", "blk.0.attn_norm.weight"}
	var names []string
	used := map[GGMLType]bool{}
	for _, n := range preferred {
		if ti, ok := g.TensorInfo(n); ok && !used[ti.Type] && ti.DType.IsFloat() {
			used[ti.Type] = true
			names = append(names, n)
		}
	}
	for _, ti := range g.TensorInfos() {
		if len(names) == 3 {
			break
		}
		if !used[ti.Type] && ti.DType.IsFloat() {
			used[ti.Type] = true
			names = append(names, ti.Name)
		}
	}
	if len(names) < 3 {
		t.Fatalf("the model has fewer than three readable tensor types: %v", used)
	}
	recs := runReference(t, python, model, names)
	compareWithReference(t, g, recs, names)
}

// TestGemma3Reference cross-checks the smallest tensor of every ggml type in
// the Gemma-3-270M Q4_K_M GGUF (F32, Q5_0, Q4_K, Q6_K, Q8_0): the k-quants
// that SmolLM2 lacks. gguf-py needs about a minute to parse this file's
// 262k-token vocabulary, so the test runs only with NWC_REQUIRE_MODELS=1 or
// NWC_GGUF_GEMMA=1.
func TestGemma3Reference(t *testing.T) {
	if os.Getenv("NWC_REQUIRE_MODELS") != "1" && os.Getenv("NWC_GGUF_GEMMA") != "1" {
		t.Skip("slow (gguf-py parses the Gemma vocabulary for ~1 min): set NWC_GGUF_GEMMA=1 or NWC_REQUIRE_MODELS=1")
	}
	model := os.Getenv("NWC_GEMMA3_GGUF")
	if model == "" {
		model = filepath.Join(cacheDir(), "models", "gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
	}
	if _, err := os.Stat(model); err != nil {
		skipOrFail(t, "Gemma-3 GGUF not available (run make setup or set NWC_GEMMA3_GGUF): %v", err)
	}
	python := checkPython(t)
	g, err := Open(model)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	smallest := map[GGMLType]TensorInfo{}
	for _, ti := range g.TensorInfos() {
		if !ti.DType.IsFloat() {
			t.Errorf("%s: type %s not readable", ti.Name, ti.Type)
			continue
		}
		if s, ok := smallest[ti.Type]; !ok || ti.Size < s.Size {
			smallest[ti.Type] = ti
		}
	}
	var names []string
	for _, ti := range g.TensorInfos() {
		if smallest[ti.Type].Name == ti.Name {
			names = append(names, ti.Name)
		}
	}
	recs := runReference(t, python, model, names)
	compareWithReference(t, g, recs, names)
}

func TestSmolLM2Listing(t *testing.T) {
	g, err := Open(smollm2Path(t))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if n := len(g.Tensors()); n != 272 {
		t.Errorf("%d tensors, want 272 (30 blocks x 9 + token_embd + output_norm)", n)
	}
	types := map[GGMLType]int{}
	for _, ti := range g.TensorInfos() {
		types[ti.Type]++
		if !ti.DType.IsFloat() {
			t.Errorf("%s: type %s not readable", ti.Name, ti.Type)
		}
	}
	t.Logf("tensor types: %v", types)
	for name, want := range map[string][]int64{
		"token_embd.weight":        {49152, 576},
		"output_norm.weight":       {576},
		"blk.0.attn_q.weight":      {576, 576},
		"blk.0.attn_k.weight":      {192, 576},
		"blk.0.attn_v.weight":      {192, 576},
		"blk.0.attn_output.weight": {576, 576},
		"blk.0.ffn_gate.weight":    {1536, 576},
		"blk.0.ffn_up.weight":      {1536, 576},
		"blk.29.ffn_down.weight":   {576, 1536},
		"blk.0.ffn_down.weight":    {576, 1536},
		"blk.0.attn_norm.weight":   {576},
		"blk.0.ffn_norm.weight":    {576},
	} {
		ti, ok := g.TensorInfo(name)
		if !ok {
			t.Errorf("no tensor %q", name)
			continue
		}
		if !reflect.DeepEqual(ti.Shape, want) {
			t.Errorf("%s: shape %v, want %v", name, ti.Shape, want)
		}
	}
	if _, ok := g.TensorInfo("output.weight"); ok {
		t.Error("output.weight present: SmolLM2 ties it to token_embd")
	}
	for key, want := range map[string]uint64{
		"llama.block_count":               30,
		"llama.embedding_length":          576,
		"llama.feed_forward_length":       1536,
		"llama.attention.head_count":      9,
		"llama.attention.head_count_kv":   3,
		"llama.rope.dimension_count":      64,
		"llama.vocab_size":                49152,
		"tokenizer.ggml.bos_token_id":     1,
		"general.quantization_version":    2,
		"llama.context_length":            8192,
		"tokenizer.ggml.eos_token_id":     2,
		"tokenizer.ggml.padding_token_id": 2,
	} {
		if v, ok := g.GetUint(key); !ok || v != want {
			t.Errorf("%s = %d (%v), want %d", key, v, ok, want)
		}
	}
	if a, _ := g.GetString("general.architecture"); a != "llama" {
		t.Errorf("architecture %q", a)
	}
	if eps, ok := g.GetFloat("llama.attention.layer_norm_rms_epsilon"); !ok || eps <= 0 || eps > 1e-3 {
		t.Errorf("rms epsilon %v %v", eps, ok)
	}
	if theta, ok := g.GetFloat("llama.rope.freq_base"); !ok || theta <= 0 {
		t.Errorf("rope freq base %v %v", theta, ok)
	}
	toks, ok := g.GetStrings("tokenizer.ggml.tokens")
	if !ok || len(toks) != 49152 {
		t.Errorf("tokenizer.ggml.tokens: %d (%v)", len(toks), ok)
	}
	if m, _ := g.GetString("tokenizer.ggml.model"); m != "gpt2" {
		t.Errorf("tokenizer model %q", m)
	}
	// The metadata survives the JSON asset exactly.
	kvs, err := ParseMetadataJSON(g.Assets()[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(kvs, g.Metadata()) {
		t.Error("metadata JSON round trip differs")
	}
	t.Logf("version %d, %d KVs, metadata JSON %d bytes", g.Version(), len(kvs), len(g.Assets()[0].Data))
}

// splitmix64 and the block layout match loader/tensor's dequant tests, whose
// golden hashes this test confirms against gguf-py.
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

var halfOffsets = map[GGMLType][]int{
	TypeQ4_0: {0}, TypeQ4_1: {0, 2}, TypeQ5_0: {0}, TypeQ5_1: {0, 2}, TypeQ8_0: {0},
	TypeQ2_K: {80, 82}, TypeQ3_K: {108}, TypeQ4_K: {0, 2}, TypeQ5_K: {0, 2}, TypeQ6_K: {208}, TypeIQ4_NL: {0}, TypeIQ4_XS: {0},
}

func randomBlocks(gt GGMLType, nb int, seed uint64) []byte {
	s := splitmix64(seed)
	ti := ggmlTypes[gt]
	bb := int(ti.blockBytes)
	b := make([]byte, nb*bb)
	for i := range b {
		b[i] = byte(s.next())
	}
	for k := 0; k < nb; k++ {
		for _, o := range halfOffsets[gt] {
			h := uint16(s.next())
			if h&0x7c00 == 0x7c00 {
				h &^= 0x4000
			}
			binary.LittleEndian.PutUint16(b[k*bb+o:], h)
		}
	}
	switch gt {
	case TypeF32: // no NaN/Inf
		for i := 0; i < len(b); i += 4 {
			if b[i+3]&0x7f == 0x7f && b[i+2]&0x80 != 0 {
				b[i+3] &^= 0x40
			}
		}
	case TypeF16:
		for i := 0; i < len(b); i += 2 {
			if b[i+1]&0x7c == 0x7c {
				b[i+1] &^= 0x40
			}
		}
	case TypeBF16:
		for i := 0; i < len(b); i += 2 {
			if b[i+1]&0x7f == 0x7f && b[i]&0x80 != 0 {
				b[i+1] &^= 0x40
			}
		}
	}
	return b
}

// TestCrossCheckRandomBlocks writes random blocks of every type gguf-py can
// dequantize into a GGUF file and requires bit-identical float32 output.
func TestCrossCheckRandomBlocks(t *testing.T) {
	python := checkPython(t)
	var tensors []testTensor
	var names []string
	for _, gt := range []GGMLType{TypeF32, TypeF16, TypeBF16, TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ8_0,
		TypeQ2_K, TypeQ3_K, TypeQ4_K, TypeQ5_K, TypeQ6_K, TypeIQ4_NL, TypeIQ4_XS} {
		ti := ggmlTypes[gt]
		nb := 64
		elems := uint64(nb) * uint64(ti.blockElems)
		name := "rand." + ti.name
		// Two rows so that the shape has rank 2.
		tensors = append(tensors, testTensor{name: name, typ: gt, dims: []uint64{elems / 2, 2},
			data: randomBlocks(gt, nb, 42+uint64(ti.dtype)), offset: -1})
		names = append(names, name)
	}
	p := writeTemp(t, buildGGUF(3, nil, tensors, 32))
	g, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	recs := runReference(t, python, p, nil)
	compareWithReference(t, g, recs, names)
	// The golden table of loader/tensor's TestDequantGolden.
	var golden strings.Builder
	for _, n := range names {
		ti, _ := g.TensorInfo(n)
		if ti.DType.Quantized() {
			fmt.Fprintf(&golden, "\t%s: %q,\n", ti.DType, recs[n].SHA256)
		}
	}
	t.Logf("golden hashes:\n%s", golden.String())
	_ = tensor.Invalid
}

// TestCrossCheckFiles compares, in every GGUF file named by
// NWC_GGUF_CROSSCHECK (separated by ':'; the llama-quantize outputs of
// scripts/run-llamacpp-peers.sh, say), two tensors of each ggml type the
// file holds with gguf-py's dequantize: real blocks of every type
// llama.cpp's quantizer wrote. Skipped without the variable.
func TestCrossCheckFiles(t *testing.T) {
	env := os.Getenv("NWC_GGUF_CROSSCHECK")
	if env == "" {
		t.Skip("NWC_GGUF_CROSSCHECK not set")
	}
	python := checkPython(t)
	seen := map[GGMLType]int{}
	for _, p := range strings.Split(env, ":") {
		g, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		per := map[GGMLType]int{}
		var names []string
		for _, ti := range g.TensorInfos() {
			if per[ti.Type] < 2 && ti.DType.IsFloat() {
				per[ti.Type]++
				names = append(names, ti.Name)
			}
		}
		recs := runReference(t, python, p, names)
		compareWithReference(t, g, recs, names)
		for gt, n := range per {
			seen[gt] += n
		}
		g.Close()
	}
	t.Logf("types checked: %v", seen)
}
