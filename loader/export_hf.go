package loader

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/safetensors"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// HF folder file names.
const (
	HFWeightsFile          = "model.safetensors"
	HFConfigFile           = "config.json"
	HFTokenizerFile        = "tokenizer.json"
	HFTokenizerConfigFile  = "tokenizer_config.json"
	HFGenerationConfigFile = "generation_config.json"
)

// HFExport is a planned export of a Llama-family source as a Hugging Face
// folder: model.safetensors with Hugging Face tensor names (attn_q / attn_k
// rows un-permuted from llama.cpp's order), config.json, tokenizer.json,
// tokenizer_config.json (chat template, special tokens) and
// generation_config.json.
type HFExport struct {
	src     tensor.Source
	opts    ExportOptions
	tensors []exportTensor
	infos   []tensor.Info
	files   map[string][]byte // the JSON files, by name
	order   []string
}

// NewHFExport plans the Hugging Face export of src; opts.DType is F32, F16
// or BF16 (all float tensors take it).
func NewHFExport(src tensor.Source, opts ExportOptions) (*HFExport, error) {
	want := opts.dtype()
	if want != tensor.F32 && want != tensor.F16 && want != tensor.BF16 {
		return nil, fmt.Errorf("export hf: %w: dtype %s (F32, F16 or BF16)", tensor.ErrUnsupportedDType, want)
	}
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		return nil, fmt.Errorf("export hf: %w", err)
	}
	if cfg.Naming == arch.NamingGGUF && cfg.Arch != arch.ArchLlama {
		// The names, norms (+1) and config.json written are Llama's.
		return nil, tensor.Kind(fmt.Sprintf("export hf: %s GGUF models are not supported (llama only)", cfg.Arch), tensor.ErrUnsupported)
	}
	e := &HFExport{src: src, opts: opts, files: map[string][]byte{}}
	for _, ti := range src.Tensors() {
		et := exportTensor{src: ti, name: ti.Name, shape: ti.Shape, dtype: ti.DType}
		if cfg.Naming == arch.NamingGGUF {
			name, part, ok := ggufToHFName(ti.Name)
			if !ok {
				return nil, fmt.Errorf("export hf: tensor %q: %w: no Hugging Face name for it", ti.Name, tensor.ErrUnsupported)
			}
			et.name, et.heads, et.toHF = name, qkHeads(cfg, part), true
		}
		if ti.DType.IsFloat() || ti.DType.Quantized() {
			et.dtype = want
		}
		sz, err := et.dtype.StorageBytes(ti.NumElements())
		if err != nil {
			return nil, fmt.Errorf("export hf: tensor %q: %w", ti.Name, err)
		}
		e.tensors = append(e.tensors, et)
		e.infos = append(e.infos, tensor.Info{Name: et.name, DType: et.dtype, Shape: et.shape, Size: sz})
	}
	assets := map[string][]byte{}
	var kvs []gguf.KV
	for _, a := range src.Assets() {
		assets[a.Name] = a.Data
		if a.Name == gguf.MetadataAsset {
			if kvs, err = gguf.ParseMetadataJSON(a.Data); err != nil {
				return nil, fmt.Errorf("export hf: %s: %w", gguf.MetadataAsset, err)
			}
		}
	}
	tok, _, err := tokjson.JSONForSource(src)
	if err != nil {
		return nil, fmt.Errorf("export hf: %w", err)
	}
	e.add(HFTokenizerFile, tok)
	if cfg.Naming == arch.NamingHF && assets[HFConfigFile] != nil {
		// A Hugging Face source: its own files, as they are.
		for _, name := range safetensors.AssetFiles {
			if d, ok := assets[name]; ok && name != HFTokenizerFile {
				e.add(name, d)
			}
		}
		return e, nil
	}
	if kvs == nil {
		return nil, fmt.Errorf("export hf: %w: the model carries neither config.json nor GGUF metadata", arch.ErrConfig)
	}
	files, err := hfFilesFromGGUF(cfg, kvs, want)
	if err != nil {
		return nil, fmt.Errorf("export hf: %w", err)
	}
	for _, name := range []string{HFConfigFile, HFTokenizerConfigFile, HFGenerationConfigFile} {
		e.add(name, files[name])
	}
	return e, nil
}

func (e *HFExport) add(name string, data []byte) {
	if _, ok := e.files[name]; !ok {
		e.order = append(e.order, name)
	}
	e.files[name] = data
}

// File returns the content of one of the JSON files the export writes.
func (e *HFExport) File(name string) ([]byte, bool) {
	d, ok := e.files[name]
	return d, ok
}

// Tensors lists the tensors of model.safetensors.
func (e *HFExport) Tensors() []tensor.Info { return e.infos }

// WriteWeights streams model.safetensors to w.
func (e *HFExport) WriteWeights(ctx context.Context, w io.Writer) error {
	cw := &countingWriter{w: w}
	meta := map[string]string{"format": "pt"}
	sw, err := safetensors.NewWriter(cw, e.infos, meta)
	if err != nil {
		return fmt.Errorf("export hf: %w", err)
	}
	var total int64
	for _, ti := range e.infos {
		total += ti.Size
	}
	err = streamTensors(ctx, e.src, e.tensors, e.opts, total, func(name string, raw []byte) error {
		return sw.WriteTensor(name, raw)
	}, func() int64 { return cw.n })
	if err == nil {
		err = sw.Close()
	}
	return err
}

// WriteDir writes the folder dir (which must not exist, or be empty): the
// files go to a temporary folder beside it, renamed to dir at the end, so a
// failed export leaves nothing behind.
func (e *HFExport) WriteDir(ctx context.Context, dir string) (err error) {
	dir = filepath.Clean(dir)
	if ents, err := os.ReadDir(dir); err == nil {
		if len(ents) > 0 {
			return fmt.Errorf("export hf: %s: folder exists and is not empty", dir)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("export hf: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp*")
	if err != nil {
		return fmt.Errorf("export hf: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err = os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("export hf: %w", err)
	}
	f, err := os.Create(filepath.Join(tmp, HFWeightsFile))
	if err != nil {
		return fmt.Errorf("export hf: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	err = e.WriteWeights(ctx, bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("export hf: %s: %w", filepath.Join(dir, HFWeightsFile), err)
	}
	for _, name := range e.order {
		if err = os.WriteFile(filepath.Join(tmp, name), e.files[name], 0o644); err != nil {
			return fmt.Errorf("export hf: %w", err)
		}
	}
	os.Remove(dir) // an empty folder given as the target
	if err = os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("export hf: %w", err)
	}
	return nil
}

// WriteHF writes src as a Hugging Face folder dir (see NewHFExport).
func WriteHF(ctx context.Context, src tensor.Source, dir string, opts ExportOptions) error {
	e, err := NewHFExport(src, opts)
	if err != nil {
		return err
	}
	return e.WriteDir(ctx, dir)
}

// hfFloat is a float written with the fewest digits that read back as the
// same float32 (GGUF stores float32: 1e-05, not 9.999999747378752e-06).
type hfFloat float64

func (f hfFloat) MarshalJSON() ([]byte, error) {
	return []byte(strconv.FormatFloat(float64(f), 'g', -1, 32)), nil
}

// hfFilesFromGGUF writes config.json, tokenizer_config.json and
// generation_config.json for a Llama model described by GGUF metadata.
func hfFilesFromGGUF(cfg arch.Config, kvs []gguf.KV, dt tensor.DType) (map[string][]byte, error) {
	sp, err := tokjson.SpecialTokens(kvs)
	if err != nil {
		return nil, err
	}
	var tokens []string
	var chatTemplate string
	var hasTemplate bool
	for _, kv := range kvs {
		switch kv.Key {
		case "tokenizer.ggml.tokens":
			tokens, _ = kv.Value.Strings()
		case "tokenizer.chat_template":
			chatTemplate, hasTemplate = kv.Value.Str()
		}
	}
	tokenStr := func(id int32) any {
		if id < 0 || int(id) >= len(tokens) {
			return nil
		}
		return tokens[id]
	}
	idOrNil := func(id int32) any {
		if id < 0 {
			return nil
		}
		return id
	}
	torchDType := map[tensor.DType]string{tensor.F32: "float32", tensor.F16: "float16", tensor.BF16: "bfloat16"}[dt]
	ctxLen := cfg.ContextLen
	if ctxLen <= 0 {
		ctxLen = 2048
	}
	config := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"attention_bias":          false,
		"attention_dropout":       0.0,
		"mlp_bias":                false,
		"hidden_act":              "silu",
		"hidden_size":             cfg.Hidden,
		"intermediate_size":       cfg.FFN,
		"num_hidden_layers":       cfg.Layers,
		"num_attention_heads":     cfg.Heads,
		"num_key_value_heads":     cfg.KVHeads,
		"head_dim":                cfg.HeadDim,
		"vocab_size":              cfg.Vocab,
		"rms_norm_eps":            hfFloat(cfg.RMSEps),
		"rope_theta":              hfFloat(cfg.RopeTheta),
		"rope_scaling":            nil,
		"max_position_embeddings": ctxLen,
		"tie_word_embeddings":     cfg.Tied,
		"initializer_range":       0.02,
		"pretraining_tp":          1,
		"use_cache":               true,
		"torch_dtype":             torchDType,
		"bos_token_id":            idOrNil(sp.BOS),
		"eos_token_id":            idOrNil(sp.EOS),
	}
	if sp.PAD >= 0 {
		config["pad_token_id"] = sp.PAD
	}
	tc := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"add_bos_token":                sp.AddBOS,
		"add_eos_token":                sp.AddEOS,
		"bos_token":                    tokenStr(sp.BOS),
		"eos_token":                    tokenStr(sp.EOS),
		"unk_token":                    tokenStr(sp.UNK),
		"pad_token":                    tokenStr(sp.PAD),
		"clean_up_tokenization_spaces": false,
		"model_max_length":             ctxLen,
	}
	if hasTemplate {
		tc["chat_template"] = chatTemplate
	}
	gen := map[string]any{
		"_from_model_config": true,
		"bos_token_id":       idOrNil(sp.BOS),
		"eos_token_id":       idOrNil(sp.EOS),
	}
	if sp.PAD >= 0 {
		gen["pad_token_id"] = sp.PAD
	}
	out := map[string][]byte{}
	for name, v := range map[string]any{HFConfigFile: config, HFTokenizerConfigFile: tc, HFGenerationConfigFile: gen} {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out[name] = b.Bytes()
	}
	return out, nil
}
