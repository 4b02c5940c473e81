package bert

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
)

const tinyConfig = `{"model_type":"bert","hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":16,
"vocab_size":10,"max_position_embeddings":16,"type_vocab_size":2,"layer_norm_eps":1e-12,"hidden_act":"gelu"}`

func TestConfigFromSource(t *testing.T) {
	src := &tensortest.MemSource{}
	src.Add("embeddings.word_embeddings.weight", make([]float32, 80), 10, 8)
	src.AssetList = []tensor.Asset{{Name: ConfigAsset, Data: []byte(tinyConfig)}}
	if !IsBERT(src) {
		t.Fatal("IsBERT false")
	}
	c, err := ConfigFromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	// No sentence_bert_config.json: 256, capped at the positions.
	if c.MaxSeqLen != 16 || !c.Normalize || c.HeadDim() != 4 || c.Prefix != "" {
		t.Errorf("config %+v", c)
	}
	src.AssetList = append(src.AssetList,
		tensor.Asset{Name: SentenceConfigAsset, Data: []byte(`{"max_seq_length": 12}`)},
		tensor.Asset{Name: ModulesAsset, Data: []byte(`[{"type":"sentence_transformers.models.Transformer"},{"type":"sentence_transformers.models.Pooling"}]`)})
	if c, err = ConfigFromSource(src); err != nil || c.MaxSeqLen != 12 || c.Normalize {
		t.Errorf("with sentence-transformers files: %+v, %v", c, err)
	}
	src.AssetList[2].Data = []byte(`[{"type":"sentence_transformers.models.Dense"}]`)
	if _, err := ConfigFromSource(src); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "Dense") {
		t.Errorf("unsupported module: %v", err)
	}

	for _, bad := range []struct{ edit, want string }{
		{`"model_type":"llama"`, "not bert"},
		{`"hidden_act":"relu"`, "hidden_act"},
		{`"num_attention_heads":3`, "multiple"},
		{`"hidden_size":-8`, "out of range"},
		{`"vocab_size":99999999999`, "out of range"},
		{`"position_embedding_type":"relative_key"`, "position_embedding_type"},
	} {
		var m map[string]any
		json.Unmarshal([]byte(tinyConfig), &m)
		var e map[string]any
		json.Unmarshal([]byte("{"+bad.edit+"}"), &e)
		for k, v := range e {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		if _, err := ConfigFromHF(b); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v", bad.edit, err)
		}
	}
	if IsBERT(&tensortest.MemSource{}) {
		t.Error("a source without config.json is BERT")
	}
	// Embedding shape disagreeing with the config.
	src2 := &tensortest.MemSource{AssetList: []tensor.Asset{{Name: ConfigAsset, Data: []byte(tinyConfig)}}}
	src2.Add("embeddings.word_embeddings.weight", make([]float32, 72), 9, 8)
	if _, err := ConfigFromSource(src2); !errors.Is(err, ErrConfig) {
		t.Errorf("wrong embedding shape: %v", err)
	}
}

func TestPrepareTokenizerJSON(t *testing.T) {
	in := `{"version":"1.0","truncation":{"max_length":128},"padding":{"strategy":{"Fixed":128}},"model":{"type":"WordPiece"},
"post_processor":{"type":"TemplateProcessing","special_tokens":{"[CLS]":{"id":"[CLS]","ids":[101]},"[SEP]":{"id":"[SEP]","ids":[102]}}}}`
	out, cls, sep, err := PrepareTokenizerJSON([]byte(in))
	if err != nil || cls != 101 || sep != 102 {
		t.Fatalf("cls %d sep %d err %v", cls, sep, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil || string(m["truncation"]) != "null" || string(m["padding"]) != "null" || len(m["model"]) == 0 {
		t.Errorf("prepared: %s", out)
	}
	bp := `{"post_processor":{"type":"BertProcessing","cls":["[CLS]",2],"sep":["[SEP]",3]}}`
	if _, cls, sep, err := PrepareTokenizerJSON([]byte(bp)); err != nil || cls != 2 || sep != 3 {
		t.Errorf("BertProcessing: %d %d %v", cls, sep, err)
	}
	for _, bad := range []string{`{`, `{"post_processor":null}`, `{"post_processor":{"type":"ByteLevel"}}`} {
		if _, _, _, err := PrepareTokenizerJSON([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

// Build names the weight it misses or finds in the wrong shape.
func TestBuildErrors(t *testing.T) {
	c, err := ConfigFromHF([]byte(tinyConfig))
	if err != nil {
		t.Fatal(err)
	}
	src := &tensortest.MemSource{}
	src.Add("embeddings.word_embeddings.weight", make([]float32, 80), 10, 8)
	if _, err := Build(c, src); !errors.Is(err, tensor.ErrNotFound) || !strings.Contains(err.Error(), "position_embeddings") {
		t.Errorf("missing weight: %v", err)
	}
	src.Add("embeddings.position_embeddings.weight", make([]float32, 8*8), 8, 8)
	if _, err := Build(c, src); !errors.Is(err, tensor.ErrShape) || !strings.Contains(err.Error(), "position_embeddings") {
		t.Errorf("wrong shape: %v", err)
	}
}

// The compressors code exactly the six linears of every block lossily:
// embeddings, LayerNorms, biases and the pooler stay lossless.
func TestBlockLinears(t *testing.T) {
	c := Config{Layers: 1}
	for _, p := range []string{PartQuery, PartKey, PartValue, PartAttnOut, PartInter, PartOutput} {
		if ti := (tensor.Info{Name: c.layer(0, p+".weight"), Shape: []int64{4, 4}}); !loader.IsBlockLinear(ti) {
			t.Errorf("%s is not a block linear", ti.Name)
		}
	}
	for _, ti := range []tensor.Info{
		{Name: "embeddings.word_embeddings.weight", Shape: []int64{4, 4}},
		{Name: "embeddings.position_embeddings.weight", Shape: []int64{4, 4}},
		{Name: "encoder.layer.0.attention.output.LayerNorm.weight", Shape: []int64{4}},
		{Name: "encoder.layer.0.output.dense.bias", Shape: []int64{4}},
		{Name: "pooler.dense.weight", Shape: []int64{4, 4}},
	} {
		if loader.IsBlockLinear(ti) {
			t.Errorf("%s is a block linear", ti.Name)
		}
	}
}
