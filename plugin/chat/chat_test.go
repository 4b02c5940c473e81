package chat

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/tensor"
)

type golden struct {
	Model    string `json:"model"`
	Template string `json:"template"`
	BOS      string `json:"bos_token"`
	EOS      string `json:"eos_token"`
	Cases    []struct {
		Name     string    `json:"name"`
		Messages []Message `json:"messages"`
		Gen      bool      `json:"add_generation_prompt"`
		Want     *string   `json:"want"`
		Error    string    `json:"error"`
	} `json:"cases"`
}

func loadGolden(t *testing.T) []golden {
	t.Helper()
	data, err := os.ReadFile("testdata/templates.json")
	if err != nil {
		t.Fatal(err)
	}
	var g []golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	if len(g) < 2 {
		t.Fatalf("%d templates in testdata", len(g))
	}
	return g
}

// TestMatchesJinja2: the Go rendering equals Python jinja2's (as
// transformers configures it; scripts/check-chat-template.py) on every
// template and conversation of the test data, errors included.
func TestMatchesJinja2(t *testing.T) {
	n := 0
	for _, g := range loadGolden(t) {
		tmpl, err := New(g.Template, g.BOS, g.EOS)
		if err != nil {
			t.Fatalf("%s: %v", g.Model, err)
		}
		for _, c := range g.Cases {
			got, err := tmpl.Render(c.Messages, c.Gen)
			switch {
			case c.Error != "":
				if err == nil || !strings.Contains(err.Error(), c.Error) {
					t.Errorf("%s / %s: want error %q, got %v (%q)", g.Model, c.Name, c.Error, err, got)
				}
			case err != nil:
				t.Errorf("%s / %s: %v", g.Model, c.Name, err)
			case got != *c.Want:
				t.Errorf("%s / %s:\n got %q\nwant %q", g.Model, c.Name, got, *c.Want)
			}
			n++
		}
	}
	t.Logf("%d renderings agree with jinja2", n)
}

func metaSource(t *testing.T, kvs []gguf.KV) tensor.Source {
	t.Helper()
	data, err := gguf.MarshalMetadataJSON(kvs)
	if err != nil {
		t.Fatal(err)
	}
	return &tensortest.MemSource{AssetList: []tensor.Asset{{Name: gguf.MetadataAsset, Data: data}}}
}

func str(s string) gguf.Value { return gguf.Value{Type: gguf.ValueString, V: s} }
func u32(n uint32) gguf.Value { return gguf.Value{Type: gguf.ValueUint32, V: n} }

const chatML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}{{ eos_token }}"

func TestFromGGUFAndStopTokens(t *testing.T) {
	kvs := []gguf.KV{
		{Key: "tokenizer.ggml.tokens", Value: gguf.Value{Type: gguf.ValueArray, Elem: gguf.ValueString, V: []string{"<unk>", "<s>", "</s>", "a"}}},
		{Key: "tokenizer.ggml.bos_token_id", Value: u32(1)},
		{Key: "tokenizer.ggml.eos_token_id", Value: u32(2)},
		{Key: "tokenizer.chat_template", Value: str(chatML)},
	}
	src := metaSource(t, kvs)
	tmpl, err := FromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.BOS != "<s>" || tmpl.EOS != "</s>" {
		t.Fatalf("bos %q eos %q", tmpl.BOS, tmpl.EOS)
	}
	got, err := tmpl.Render([]Message{{"user", "hi"}}, true)
	if want := "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n</s>"; err != nil || got != want {
		t.Fatalf("render %q, %v; want %q", got, err, want)
	}
	ids, err := StopTokens(src)
	if err != nil || len(ids) != 1 || ids[0] != 2 {
		t.Fatalf("stop tokens %v, %v", ids, err)
	}
	// No template.
	if _, err := FromSource(metaSource(t, kvs[:3])); !errors.Is(err, ErrNoTemplate) {
		t.Fatalf("no template: %v", err)
	}
	if _, err := FromSource(&tensortest.MemSource{}); !errors.Is(err, ErrNoTemplate) {
		t.Fatalf("no metadata: %v", err)
	}
	// A template that does not compile is an error, not a panic.
	if _, err := New("{% for x in %}", "", ""); err == nil {
		t.Fatal("bad template compiled")
	}
}

func TestFromTokenizerConfig(t *testing.T) {
	tc, _ := json.Marshal(map[string]any{"chat_template": chatML, "bos_token": "<s>",
		"eos_token": map[string]any{"content": "<|im_end|>", "special": true}})
	src := &tensortest.MemSource{AssetList: []tensor.Asset{
		{Name: TokenizerConfigAsset, Data: tc},
		{Name: "config.json", Data: []byte(`{"eos_token_id": 7}`)},
		{Name: GenerationConfigAsset, Data: []byte(`{"eos_token_id": [2, 7, 2]}`)},
	}}
	tmpl, err := FromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.BOS != "<s>" || tmpl.EOS != "<|im_end|>" {
		t.Fatalf("bos %q eos %q", tmpl.BOS, tmpl.EOS)
	}
	ids, err := StopTokens(src)
	if err != nil || len(ids) != 2 || ids[0] != 2 || ids[1] != 7 {
		t.Fatalf("stop tokens %v, %v", ids, err)
	}
	// A list of named templates: "default" is used.
	named, _ := json.Marshal(map[string]any{"chat_template": []map[string]string{{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ messages[0].content }}"}}})
	tmpl, err = FromTokenizerConfig(named)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tmpl.Render([]Message{{"user", "q"}}, false); got != "q" {
		t.Fatalf("named template rendered %q", got)
	}
	for _, bad := range []string{`{`, `{"chat_template": 3}`} {
		if _, err := FromTokenizerConfig([]byte(bad)); err == nil {
			t.Fatalf("%s accepted", bad)
		}
	}
	if _, err := FromTokenizerConfig([]byte(`{}`)); !errors.Is(err, ErrNoTemplate) {
		t.Fatalf("no template: %v", err)
	}
	if _, err := StopTokens(&tensortest.MemSource{AssetList: []tensor.Asset{{Name: "config.json", Data: []byte(`{"eos_token_id": "x"}`)}}}); err == nil {
		t.Fatal("bad eos_token_id accepted")
	}
}

// TestSmolLM2Template: the reference model's own template (read from its
// GGUF) is the one in the test data, and its eos id is 2 (<|im_end|>).
func TestSmolLM2Template(t *testing.T) {
	if _, err := refmodel.Lookup("smollm2-135m"); err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("reference model not installed: %v", err)
	}
	src, _, err := loader.Open("smollm2-135m", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmpl, err := FromSource(src)
	if err != nil {
		t.Fatal(err)
	}
	var g *golden
	for _, x := range loadGolden(t) {
		if strings.HasPrefix(x.Model, "SmolLM2-135M") {
			g = &x
		}
	}
	if g == nil || g.Template != tmpl.Source || g.EOS != tmpl.EOS {
		t.Fatalf("the GGUF's template is not the test data's")
	}
	ids, err := StopTokens(src)
	if err != nil || len(ids) != 1 || ids[0] != 2 || tmpl.EOS != "<|im_end|>" {
		t.Fatalf("stop tokens %v (%v), eos %q", ids, err, tmpl.EOS)
	}
}
