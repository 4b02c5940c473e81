package plugin_test

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/plugin"
)

// The architecture config and the tokenizer of a real model, through one
// accessor each.
func TestSmolLM2ConfigAndTokenizer(t *testing.T) {
	if _, err := refmodel.Resolve("smollm2-135m"); err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx := context.Background()
	m, err := plugin.Open(ctx, "smollm2-135m")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Format() != "gguf" {
		t.Errorf("format %q", m.Format())
	}
	cfg, err := m.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Layers != 30 || cfg.Hidden != 576 || cfg.Heads != 9 || cfg.KVHeads != 3 || cfg.Vocab != 49152 || !cfg.Tied {
		t.Errorf("config %+v", cfg)
	}
	tj, err := m.TokenizerJSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Model struct {
			Type  string         `json:"type"`
			Vocab map[string]int `json:"vocab"`
		} `json:"model"`
	}
	if err := json.Unmarshal(tj, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Model.Type != "BPE" || len(doc.Model.Vocab) != cfg.Vocab {
		t.Errorf("tokenizer.json: model %q with %d tokens", doc.Model.Type, len(doc.Model.Vocab))
	}
}
