package loader

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// ExportOptions configures the exporters (WriteGGUF, WriteHF).
type ExportOptions struct {
	// DType of the float weights written: F32 (the zero value means F32),
	// F16, BF16 or, for GGUF only, Q8_0. In GGUF output 1-D tensors (norms)
	// stay F32 as llama.cpp's converter keeps them, and a Q8_0 tensor whose
	// rows are not a multiple of 32 is written as F16. Integer tensors keep
	// their type.
	DType tensor.DType
	// Progress, when set, is called after each tensor with the output bytes
	// done and the total.
	Progress func(done, total int64)
	// Ahead is how many tensors decode ahead of the writer (Prefetch); 0: 2.
	// Memory is bounded by about Ahead+2 tensors, never the whole model.
	Ahead int
}

func (o ExportOptions) dtype() tensor.DType {
	if o.DType == tensor.Invalid {
		return tensor.F32
	}
	return o.DType
}

func (o ExportOptions) ahead() int {
	if o.Ahead <= 0 {
		return 2
	}
	return o.Ahead
}

// GGML file types (llama_ftype) for general.file_type.
const (
	ftypeAllF32     = 0
	ftypeMostlyF16  = 1
	ftypeMostlyQ80  = 7
	ftypeMostlyBF16 = 32
)

// exportTensor is one tensor of an export: where it comes from, what it
// becomes, and whether its rows are re-ordered on the way.
type exportTensor struct {
	src   tensor.Info
	name  string
	dtype tensor.DType
	shape []int64
	// rotary row order change for attn_q / attn_k: heads > 0 re-orders the
	// rows per head; toHF un-permutes (GGUF -> HF), else permutes.
	heads int
	toHF  bool
}

// GGUFExport is a planned GGUF export of a source: the metadata and the
// byte layout are fixed before any tensor is decoded, so Size is known up
// front (an HTTP server can send Content-Length) and Write streams the file
// tensor by tensor.
type GGUFExport struct {
	src     tensor.Source
	opts    ExportOptions
	kvs     []gguf.KV
	tensors []exportTensor
	wts     []gguf.WriteTensor
	layout  gguf.Layout
}

// NewGGUFExport plans the GGUF export of src. The metadata is src's GGUF
// metadata (a GGUF file, or a .nwc made from one), copied entire, tokenizer
// included; or, for a Hugging Face-origin model, made from its config.json,
// tokenizer.json and tokenizer_config.json (see ggufMetadataOf).
// general.file_type is set to match opts.DType. Tensors named the Hugging
// Face way are renamed to llama.cpp's names and their attn_q / attn_k rows
// permuted as llama.cpp's converter does.
func NewGGUFExport(src tensor.Source, opts ExportOptions) (*GGUFExport, error) {
	want := opts.dtype()
	var ftype uint32
	switch want {
	case tensor.F32:
		ftype = ftypeAllF32
	case tensor.F16:
		ftype = ftypeMostlyF16
	case tensor.BF16:
		ftype = ftypeMostlyBF16
	case tensor.Q8_0:
		ftype = ftypeMostlyQ80
	default:
		return nil, fmt.Errorf("export gguf: %w: dtype %s (F32, F16, BF16 or Q8_0)", tensor.ErrUnsupportedDType, want)
	}
	has := map[string]bool{}
	for _, a := range src.Assets() {
		has[a.Name] = true
	}
	if !has[gguf.MetadataAsset] && !has[tokjson.TokenizerAsset] {
		return nil, tensor.Kind(fmt.Sprintf("export gguf: the model carries neither a %s asset (it was not made from a GGUF file) nor a %s; "+
			"GGUF export needs the tokenizer", gguf.MetadataAsset, tokjson.TokenizerAsset), tensor.ErrUnsupported)
	}
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		return nil, fmt.Errorf("export gguf: %w", err)
	}
	// A model that came from a GGUF file is written back with its own
	// metadata and tensor names, whatever its architecture (llama.cpp reads
	// it as it read the original). One from a Hugging Face checkpoint gets
	// llama.* metadata made here: a model with q/k/v biases or q/k norms
	// would need its own llama.cpp architecture.
	fromGGUF := has[gguf.MetadataAsset] && cfg.Naming != arch.NamingHF
	if !fromGGUF && (cfg.QKVBias || cfg.QKNorm || (cfg.Arch != arch.ArchLlama && cfg.Arch != arch.ArchMistral)) {
		return nil, tensor.Kind(fmt.Sprintf("export gguf: %s models from a Hugging Face checkpoint are not supported (llama and mistral only; any architecture exports from a GGUF-origin model)", cfg.Arch), tensor.ErrUnsupported)
	}
	kvs, err := ggufMetadataOf(src, cfg)
	if err != nil {
		return nil, err
	}
	kvs = setKV(kvs, "general.file_type", gguf.Value{Type: gguf.ValueUint32, V: ftype})
	if want == tensor.Q8_0 {
		kvs = setKV(kvs, "general.quantization_version", gguf.Value{Type: gguf.ValueUint32, V: uint32(2)})
	}
	e := &GGUFExport{src: src, opts: opts, kvs: kvs}
	for _, ti := range src.Tensors() {
		et := exportTensor{src: ti, name: ti.Name, shape: ti.Shape}
		if cfg.Naming == arch.NamingHF {
			name, part, ok := hfToGGUFName(ti.Name)
			if !ok {
				return nil, fmt.Errorf("export gguf: tensor %q: %w: no llama.cpp name for it", ti.Name, tensor.ErrUnsupported)
			}
			et.name = name
			et.heads = qkHeads(cfg, part)
		}
		et.dtype, err = ggufOutDType(ti, want)
		if err != nil {
			return nil, fmt.Errorf("export gguf: tensor %q: %w", ti.Name, err)
		}
		gt, ok := gguf.GGMLTypeOf(et.dtype)
		if !ok {
			return nil, fmt.Errorf("export gguf: tensor %q: %w: GGUF cannot store %s", ti.Name, tensor.ErrUnsupportedDType, et.dtype)
		}
		e.tensors = append(e.tensors, et)
		e.wts = append(e.wts, gguf.WriteTensor{Name: et.name, Type: gt, Shape: et.shape})
	}
	if e.layout, _, err = gguf.Plan(e.kvs, e.wts); err != nil {
		return nil, fmt.Errorf("export gguf: %w", err)
	}
	return e, nil
}

// ggufMetadataOf returns the GGUF metadata of src: its gguf-metadata.json
// asset, entire; or, for a model that came from a Hugging Face checkpoint,
// llama.* keys made from its config and tokenizer.* keys converted from its
// tokenizer.json and tokenizer_config.json (byte-level BPE whose
// pre-tokenizer llama.cpp knows by name; anything else is refused).
func ggufMetadataOf(src tensor.Source, cfg arch.Config) ([]gguf.KV, error) {
	assets := map[string][]byte{}
	for _, a := range src.Assets() {
		assets[a.Name] = a.Data
	}
	if meta, ok := assets[gguf.MetadataAsset]; ok {
		kvs, err := gguf.ParseMetadataJSON(meta)
		if err != nil {
			return nil, fmt.Errorf("export gguf: %s: %w", gguf.MetadataAsset, err)
		}
		return kvs, nil
	}
	tkv, err := tokjson.ToGGUFMetadata(assets[tokjson.TokenizerAsset], assets[HFTokenizerConfigFile])
	if err != nil {
		return nil, fmt.Errorf("export gguf: %w", err)
	}
	u32 := func(x int) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: uint32(x)} }
	f32 := func(x float64) gguf.Value { return gguf.Value{Type: gguf.ValueFloat32, V: float32(x)} }
	ctxLen := cfg.ContextLen
	if ctxLen <= 0 {
		ctxLen = 2048
	}
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: gguf.Value{Type: gguf.ValueString, V: "llama"}},
		{Key: "llama.block_count", Value: u32(cfg.Layers)},
		{Key: "llama.context_length", Value: u32(ctxLen)},
		{Key: "llama.embedding_length", Value: u32(cfg.Hidden)},
		{Key: "llama.feed_forward_length", Value: u32(cfg.FFN)},
		{Key: "llama.attention.head_count", Value: u32(cfg.Heads)},
		{Key: "llama.attention.head_count_kv", Value: u32(cfg.KVHeads)},
		{Key: "llama.rope.freq_base", Value: f32(cfg.RopeTheta)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: f32(cfg.RMSEps)},
		{Key: "llama.vocab_size", Value: u32(cfg.Vocab)},
		{Key: "llama.rope.dimension_count", Value: u32(cfg.HeadDim)},
	}
	if cfg.HeadDim*cfg.Heads != cfg.Hidden {
		kvs = append(kvs, gguf.KV{Key: "llama.attention.key_length", Value: u32(cfg.HeadDim)},
			gguf.KV{Key: "llama.attention.value_length", Value: u32(cfg.HeadDim)})
	}
	return append(kvs, tkv...), nil
}

// ggufOutDType is the type tensor ti takes in a GGUF export at dtype want.
func ggufOutDType(ti tensor.Info, want tensor.DType) (tensor.DType, error) {
	if !ti.DType.IsFloat() && !ti.DType.Quantized() {
		return ti.DType, nil // integer tensors keep their type
	}
	if len(ti.Shape) <= 1 {
		return tensor.F32, nil
	}
	if want == tensor.Q8_0 && ti.Shape[len(ti.Shape)-1]%32 != 0 {
		return tensor.F16, nil
	}
	return want, nil
}

// setKV sets key to v, in place when kvs hold it, else after the last
// general.* key.
func setKV(kvs []gguf.KV, key string, v gguf.Value) []gguf.KV {
	out := append([]gguf.KV(nil), kvs...)
	at := 0
	for i, kv := range out {
		if kv.Key == key {
			out[i].Value = v
			return out
		}
		if strings.HasPrefix(kv.Key, "general.") {
			at = i + 1
		}
	}
	out = append(out, gguf.KV{})
	copy(out[at+1:], out[at:])
	out[at] = gguf.KV{Key: key, Value: v}
	return out
}

// Metadata returns the metadata the export writes.
func (e *GGUFExport) Metadata() []gguf.KV { return e.kvs }

// Size returns the size of the GGUF file in bytes.
func (e *GGUFExport) Size() int64 { return e.layout.FileSize }

// Write streams the GGUF file to w, decoding the next tensors while one is
// written; it returns the bytes written.
func (e *GGUFExport) Write(ctx context.Context, w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	gw, err := gguf.NewWriter(cw, e.kvs, e.wts)
	if err != nil {
		return cw.n, fmt.Errorf("export gguf: %w", err)
	}
	err = streamTensors(ctx, e.src, e.tensors, e.opts, e.layout.FileSize, func(name string, raw []byte) error {
		if err := gw.WriteTensor(name, raw); err != nil {
			return fmt.Errorf("export gguf: %w", err)
		}
		return nil
	}, func() int64 { return cw.n })
	if err == nil {
		err = gw.Close()
	}
	return cw.n, err
}

// WriteTo implements io.WriterTo: it streams the file to w; it is
// Write without cancellation.
func (e *GGUFExport) WriteTo(w io.Writer) (int64, error) { return e.Write(context.Background(), w) }

// WriteGGUF streams src as a GGUF file to w (see NewGGUFExport); memory is
// bounded by a few tensors.
func WriteGGUF(ctx context.Context, src tensor.Source, w io.Writer, opts ExportOptions) (int64, error) {
	e, err := NewGGUFExport(src, opts)
	if err != nil {
		return 0, err
	}
	return e.Write(ctx, w)
}

// WriteGGUFFile writes src as the GGUF file path, atomically (a temporary
// file in the same folder, synced and renamed).
func WriteGGUFFile(ctx context.Context, src tensor.Source, path string, opts ExportOptions) error {
	e, err := NewGGUFExport(src, opts)
	if err != nil {
		return err
	}
	return writeAtomic(path, func(w io.Writer) error {
		_, err := e.Write(ctx, w)
		return err
	})
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// streamTensors reads the tensors of src in order through a Prefetcher,
// converts each to its export form and hands the bytes to put.
func streamTensors(ctx context.Context, src tensor.Source, ts []exportTensor, opts ExportOptions, total int64,
	put func(name string, raw []byte) error, done func() int64) error {
	order := make([]string, len(ts))
	for i, t := range ts {
		order[i] = t.src.Name
	}
	pf := Prefetch(ctx, src, false, PrefetchOptions{Ahead: opts.ahead(), Order: order})
	defer pf.Close()
	var raw, out []byte
	var f32 []float32
	for _, t := range ts {
		if err := ctx.Err(); err != nil {
			return err
		}
		var err error
		raw, err = pf.ReadTensor(ctx, t.src.Name, raw)
		if err != nil {
			return err
		}
		data := raw
		if t.dtype != t.src.DType || t.heads > 0 {
			n := t.src.NumElements()
			f32, err = tensor.ToFloat32(t.src.DType, raw, n, f32)
			if err != nil {
				return fmt.Errorf("export: tensor %q: %w", t.src.Name, err)
			}
			if t.heads > 0 {
				f32 = arch.PermuteQK(f32, int(t.shape[0]), int(n/t.shape[0]), t.heads, t.toHF)
			}
			out, err = encodeFloat32(f32, t.dtype, out)
			if err != nil {
				return fmt.Errorf("export: tensor %q: %w", t.src.Name, err)
			}
			data = out
		}
		if err := put(t.name, data); err != nil {
			return err
		}
		if opts.Progress != nil {
			opts.Progress(done(), total)
		}
	}
	return nil
}

// encodeFloat32 writes f in dtype dt (F32, F16, BF16 or Q8_0) into dst.
func encodeFloat32(f []float32, dt tensor.DType, dst []byte) ([]byte, error) {
	switch dt {
	case tensor.F32:
		return tensor.F32Bytes(f, dst), nil
	case tensor.F16, tensor.BF16:
		n := 2 * len(f)
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		dst = dst[:n]
		for i, v := range f {
			var h uint16
			if dt == tensor.F16 {
				h = tensor.F32ToF16(v)
			} else {
				h = tensor.F32ToBF16(v)
			}
			binary.LittleEndian.PutUint16(dst[2*i:], h)
		}
		return dst, nil
	case tensor.Q8_0:
		return gguf.QuantizeQ8_0(f, dst)
	}
	return nil, fmt.Errorf("%w: cannot write %s", tensor.ErrUnsupportedDType, dt)
}

// layerParts are the llama.cpp names of a block's weights.
var layerParts = []string{"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"}

// ggufToHFName maps a llama.cpp tensor name to its Hugging Face name; part is
// the block part (attn_q, ...) or "" for the global tensors.
func ggufToHFName(name string) (hf, part string, ok bool) {
	for _, n := range []func(arch.Naming) string{arch.Naming.EmbedTensor, arch.Naming.NormTensor, arch.Naming.HeadTensor} {
		if name == n(arch.NamingGGUF) {
			return n(arch.NamingHF), "", true
		}
	}
	rest, found := strings.CutPrefix(name, "blk.")
	if !found {
		return "", "", false
	}
	num, rest, found := strings.Cut(rest, ".")
	layer, err := strconv.Atoi(num)
	if !found || err != nil || layer < 0 || strconv.Itoa(layer) != num {
		return "", "", false
	}
	part, found = strings.CutSuffix(rest, ".weight")
	if !found {
		return "", "", false
	}
	for _, p := range layerParts {
		if p == part {
			return arch.NamingHF.LayerTensor(layer, part), part, true
		}
	}
	return "", "", false
}

// hfToGGUFName is the inverse of ggufToHFName.
func hfToGGUFName(name string) (gg, part string, ok bool) {
	for _, n := range []func(arch.Naming) string{arch.Naming.EmbedTensor, arch.Naming.NormTensor, arch.Naming.HeadTensor} {
		if name == n(arch.NamingHF) {
			return n(arch.NamingGGUF), "", true
		}
	}
	rest, found := strings.CutPrefix(name, "model.layers.")
	if !found {
		return "", "", false
	}
	num, _, found := strings.Cut(rest, ".")
	layer, err := strconv.Atoi(num)
	if !found || err != nil || layer < 0 || strconv.Itoa(layer) != num {
		return "", "", false
	}
	for _, p := range layerParts {
		if arch.NamingHF.LayerTensor(layer, p) == name {
			return arch.NamingGGUF.LayerTensor(layer, p), p, true
		}
	}
	return "", "", false
}

// qkHeads is the head count whose rows permuteQK re-orders for a block
// part: the query heads for attn_q, the key/value heads for attn_k, else 0.
func qkHeads(cfg arch.Config, part string) int {
	switch part {
	case "attn_q":
		return cfg.Heads
	case "attn_k":
		return cfg.KVHeads
	}
	return 0
}

// writeAtomic writes the file path through write, into a temporary file in
// the same folder that is synced and renamed to path only when write
// succeeds; on failure the temporary file is removed and path is untouched.
func writeAtomic(path string, write func(w io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err = tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err = write(bw); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = bw.Flush(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = tmp.Sync(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = tmp.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
