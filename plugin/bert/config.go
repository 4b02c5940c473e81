// Package bert runs BERT sentence encoders (sentence-transformers
// all-MiniLM-L6-v2, `minilm-l6`) with ONNX Runtime: Build turns a
// checkpoint (safetensors folder or .nwc, any tensor.Source with Hugging
// Face BertModel names) into an ONNX graph, Model holds one session of it
// and Embed returns sentence embeddings as sentence-transformers computes
// them (Transformer -> mean Pooling over the attention mask -> Normalize).
//
// The config and tokenizer preparation here are pure Go; the graph,
// Model, the tokenizer and the calibration graph need cgo (ONNX Runtime,
// daulet/tokenizers).
package bert

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/nwc-project/nwc/loader/tensor"
)

// ErrConfig is wrapped when a model is not a BERT encoder we run, or its
// config is inconsistent.
var ErrConfig = errors.New("bert config")

// Asset names read from the source (Hugging Face / sentence-transformers
// files carried next to the weights or inside a .nwc).
const (
	ConfigAsset         = "config.json"
	SentenceConfigAsset = "sentence_bert_config.json"
	ModulesAsset        = "modules.json"
	TokenizerAsset      = "tokenizer.json"
)

// DefaultMaxSeqLen is the token limit (special tokens included) when the
// model carries no sentence_bert_config.json: all-MiniLM-L6-v2's 256.
const DefaultMaxSeqLen = 256

// Config holds a BERT encoder's hyper-parameters and its
// sentence-transformers pipeline.
type Config struct {
	Layers, Hidden, Heads, FFN int
	Vocab, MaxPositions        int
	TypeVocab                  int
	LayerNormEps               float64
	// Prefix is "" or "bert." (the tensor names' prefix).
	Prefix string
	// MaxSeqLen is sentence-transformers' max_seq_length: longer inputs
	// are truncated to it, [CLS] and [SEP] included.
	MaxSeqLen int
	// Normalize: the pipeline ends with sentence-transformers' Normalize
	// (L2) module.
	Normalize bool
}

// HeadDim is Hidden / Heads.
func (c Config) HeadDim() int { return c.Hidden / c.Heads }

type hfBERT struct {
	ModelType     string   `json:"model_type"`
	Architectures []string `json:"architectures"`
	HiddenSize    int      `json:"hidden_size"`
	Layers        int      `json:"num_hidden_layers"`
	Heads         int      `json:"num_attention_heads"`
	Intermediate  int      `json:"intermediate_size"`
	VocabSize     int      `json:"vocab_size"`
	MaxPos        int      `json:"max_position_embeddings"`
	TypeVocab     int      `json:"type_vocab_size"`
	LayerNormEps  float64  `json:"layer_norm_eps"`
	HiddenAct     string   `json:"hidden_act"`
	PosEmbType    string   `json:"position_embedding_type"`
}

func asset(src tensor.Source, name string) []byte {
	for _, a := range src.Assets() {
		if a.Name == name {
			return a.Data
		}
	}
	return nil
}

// IsBERT reports whether src carries a config.json of a BERT model
// (model_type "bert").
func IsBERT(src tensor.Source) bool {
	data := asset(src, ConfigAsset)
	if data == nil {
		return false
	}
	var h hfBERT
	if json.Unmarshal(data, &h) != nil {
		return false
	}
	return h.ModelType == "bert" || (h.ModelType == "" && len(h.Architectures) > 0 && strings.HasPrefix(h.Architectures[0], "Bert"))
}

// ConfigFromSource reads the config of src from its config.json (and the
// sentence-transformers files sentence_bert_config.json and modules.json
// when present) and checks it against the tensors.
func ConfigFromSource(src tensor.Source) (Config, error) {
	data := asset(src, ConfigAsset)
	if data == nil {
		return Config{}, fmt.Errorf("%w: the model carries no %s", ErrConfig, ConfigAsset)
	}
	c, err := ConfigFromHF(data)
	if err != nil {
		return Config{}, err
	}
	if st := asset(src, SentenceConfigAsset); st != nil {
		var s struct {
			MaxSeqLength int `json:"max_seq_length"`
		}
		if err := json.Unmarshal(st, &s); err != nil {
			return Config{}, fmt.Errorf("%w: %s: %w", ErrConfig, SentenceConfigAsset, err)
		}
		if s.MaxSeqLength > 0 {
			c.MaxSeqLen = s.MaxSeqLength
		}
	}
	if c.MaxSeqLen > c.MaxPositions {
		c.MaxSeqLen = c.MaxPositions
	}
	if mj := asset(src, ModulesAsset); mj != nil {
		var mods []struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(mj, &mods); err != nil {
			return Config{}, fmt.Errorf("%w: %s: %w", ErrConfig, ModulesAsset, err)
		}
		c.Normalize = false
		for _, m := range mods {
			switch m.Type {
			case "sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling":
			case "sentence_transformers.models.Normalize":
				c.Normalize = true
			default:
				return Config{}, fmt.Errorf("%w: %s: module %q is not supported (Transformer, Pooling, Normalize)", ErrConfig, ModulesAsset, m.Type)
			}
		}
	}
	infos := src.Tensors()
	if _, ok := tensor.Find(infos, "bert.embeddings.word_embeddings.weight"); ok {
		c.Prefix = "bert."
	}
	emb, ok := tensor.Find(infos, c.Prefix+"embeddings.word_embeddings.weight")
	if !ok {
		return Config{}, fmt.Errorf("%w: no embeddings.word_embeddings.weight tensor", ErrConfig)
	}
	if len(emb.Shape) != 2 || emb.Shape[0] != int64(c.Vocab) || emb.Shape[1] != int64(c.Hidden) {
		return Config{}, fmt.Errorf("%w: word embeddings have shape %v, config says [%d %d]", ErrConfig, emb.Shape, c.Vocab, c.Hidden)
	}
	return c, nil
}

// ConfigFromHF parses a Hugging Face BERT config.json.
func ConfigFromHF(data []byte) (Config, error) {
	var h hfBERT
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("%w: config.json: %w", ErrConfig, err)
	}
	if h.ModelType != "bert" {
		return Config{}, fmt.Errorf("%w: config.json model_type %q is not bert", ErrConfig, h.ModelType)
	}
	if h.HiddenAct != "gelu" {
		return Config{}, fmt.Errorf("%w: hidden_act %q is not supported (gelu only)", ErrConfig, h.HiddenAct)
	}
	if h.PosEmbType != "" && h.PosEmbType != "absolute" {
		return Config{}, fmt.Errorf("%w: position_embedding_type %q is not supported (absolute only)", ErrConfig, h.PosEmbType)
	}
	c := Config{Layers: h.Layers, Hidden: h.HiddenSize, Heads: h.Heads, FFN: h.Intermediate, Vocab: h.VocabSize,
		MaxPositions: h.MaxPos, TypeVocab: h.TypeVocab, LayerNormEps: h.LayerNormEps, MaxSeqLen: DefaultMaxSeqLen, Normalize: true}
	if c.LayerNormEps == 0 {
		c.LayerNormEps = 1e-12
	}
	if c.TypeVocab == 0 {
		c.TypeVocab = 2
	}
	return c, c.Validate()
}

// Validate checks that the sizes are positive, bounded and consistent.
func (c Config) Validate() error {
	const maxDim = 1 << 20
	for _, v := range []int{c.Layers, c.Hidden, c.Heads, c.FFN, c.Vocab, c.MaxPositions, c.TypeVocab} {
		if v <= 0 || v > maxDim {
			return fmt.Errorf("%w: size %d out of range in %+v", ErrConfig, v, c)
		}
	}
	if c.Hidden%c.Heads != 0 {
		return fmt.Errorf("%w: hidden_size %d not a multiple of %d heads", ErrConfig, c.Hidden, c.Heads)
	}
	if !(c.LayerNormEps > 0) {
		return fmt.Errorf("%w: layer_norm_eps %g", ErrConfig, c.LayerNormEps)
	}
	if c.MaxSeqLen < 3 {
		return fmt.Errorf("%w: max_seq_length %d below 3", ErrConfig, c.MaxSeqLen)
	}
	return nil
}

// Tensor names (Hugging Face BertModel) of layer l.
func (c Config) layer(l int, part string) string {
	return fmt.Sprintf("%sencoder.layer.%d.%s", c.Prefix, l, part)
}

// Linear parts of a block, in graph order.
const (
	PartQuery   = "attention.self.query"
	PartKey     = "attention.self.key"
	PartValue   = "attention.self.value"
	PartAttnOut = "attention.output.dense"
	PartInter   = "intermediate.dense"
	PartOutput  = "output.dense"
)

// PrepareTokenizerJSON returns tokenizer.json with its own truncation and
// padding removed (all-MiniLM-L6-v2's file pads and truncates to 128;
// sentence-transformers overrides both: truncation to max_seq_length,
// padding to the longest sentence of a batch, which Embed does itself),
// and the ids of the [CLS] and [SEP] tokens its post-processor adds.
func PrepareTokenizerJSON(data []byte) (out []byte, cls, sep int32, err error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, 0, 0, fmt.Errorf("bert: tokenizer.json: %w", err)
	}
	m["truncation"] = json.RawMessage("null")
	m["padding"] = json.RawMessage("null")
	cls, sep = -1, -1
	var pp struct {
		Type          string `json:"type"`
		SpecialTokens map[string]struct {
			IDs []int64 `json:"ids"`
		} `json:"special_tokens"`
		Cls []json.RawMessage `json:"cls"`
		Sep []json.RawMessage `json:"sep"`
	}
	if raw, ok := m["post_processor"]; ok && string(raw) != "null" {
		if err := json.Unmarshal(raw, &pp); err != nil {
			return nil, 0, 0, fmt.Errorf("bert: tokenizer.json post_processor: %w", err)
		}
	}
	special := func(name string) int32 {
		if t, ok := pp.SpecialTokens[name]; ok && len(t.IDs) == 1 && t.IDs[0] >= 0 && t.IDs[0] < 1<<31 {
			return int32(t.IDs[0])
		}
		return -1
	}
	switch pp.Type {
	case "TemplateProcessing":
		cls, sep = special("[CLS]"), special("[SEP]")
	case "BertProcessing":
		pair := func(r []json.RawMessage) int32 {
			var id int64 = -1
			if len(r) == 2 && json.Unmarshal(r[1], &id) == nil && id >= 0 && id < 1<<31 {
				return int32(id)
			}
			return -1
		}
		cls, sep = pair(pp.Cls), pair(pp.Sep)
	}
	if cls < 0 || sep < 0 {
		return nil, 0, 0, fmt.Errorf("bert: tokenizer.json: no [CLS]/[SEP] ids in its post_processor (type %q)", pp.Type)
	}
	out, err = json.Marshal(m)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("bert: tokenizer.json: %w", err)
	}
	return out, cls, sep, nil
}
