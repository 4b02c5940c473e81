//go:build cgo

package tokenizer

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/tokentest"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// The tiny SentencePiece vocabulary (internal/tokentest) through the
// tokenizer.json built for it: fixed cases, and random texts compared with
// tokentest.SPMReference, a direct transcription of llama.cpp's algorithm.
func TestSentencePieceTiny(t *testing.T) {
	v := tokentest.NewSPMVocab()
	noPrefix := gguf.KV{Key: "tokenizer.ggml.add_space_prefix", Value: tokentest.Bool(false)}
	swapped := append([]float32(nil), v.Scores...)
	swapped[v.ID["ab"]], swapped[v.ID["bc"]] = swapped[v.ID["bc"]], swapped[v.ID["ab"]]
	withSwapped := gguf.KV{Key: "tokenizer.ggml.scores", Value: tokentest.F32s(swapped)}
	type tc struct {
		text string
		want []string
	}
	for _, c := range []struct {
		name   string
		extra  []gguf.KV
		prefix bool
		scores []float32
		cases  []tc
	}{
		{"prefix", nil, true, v.Scores, []tc{
			{"the", []string{"▁the"}},
			{"hello", []string{"▁hello"}},
			// Merges by score: ab (-8) before bc (-9).
			{"abc", []string{"▁", "ab", "c"}},
			{"a  b", []string{"▁a", "▁▁", "b"}},
			// Byte fallback for a character that is no token.
			{"é", []string{"▁", "<0xC3>", "<0xA9>"}},
			// Special tokens split the text; the fragment after one gets
			// the space prefix again (llama.cpp's is_prev_special).
			{"a<td>b", []string{"▁a", "<td>", "▁", "b"}},
			{"<s>the<start_of_turn>", []string{"<s>", "▁the", "<start_of_turn>"}},
		}},
		{"no prefix", []gguf.KV{noPrefix}, false, v.Scores, []tc{
			{"the", []string{"t", "he"}},
			{"abc", []string{"ab", "c"}},
			{"a<td>b", []string{"a", "<td>", "b"}},
			{" hello", []string{"▁hello"}},
		}},
		{"swapped scores", []gguf.KV{withSwapped}, true, swapped, []tc{
			// Now bc (-8) merges before ab (-9).
			{"abc", []string{"▁a", "bc"}},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok := build(t, v.KVs(c.extra...))
			check := func(text string, want []string) {
				t.Helper()
				got, err := tok.Encode(text)
				if err != nil {
					t.Fatal(err)
				}
				ref := tokentest.SPMReference(v.Tokens, v.Types, c.scores, c.prefix, text)
				if !reflect.DeepEqual(got, ref) {
					t.Errorf("Encode(%q) = %q, llama.cpp's algorithm gives %q", text, v.Pieces(got), v.Pieces(ref))
				}
				if want != nil && !reflect.DeepEqual(v.Pieces(got), want) {
					t.Errorf("Encode(%q) = %q, want %q", text, v.Pieces(got), want)
				}
				// The decoder strips the one space the prefix added in front
				// of the text, not those added after special tokens (nor does
				// llama.cpp's detokenizer).
				if c.prefix && strings.ContainsAny(text, "<>") {
					return
				}
				back, err := tok.Decode(got)
				if err != nil || back != text {
					t.Errorf("Decode(Encode(%q)) = %q, %v", text, back, err)
				}
			}
			for _, tc := range c.cases {
				check(tc.text, tc.want)
			}
			// Random texts over the vocabulary's characters, spaces, a
			// character without a token and the special tokens.
			alphabet := []string{"a", "b", "c", "e", "h", "l", "o", "t", "d", " ", " ", "é", "<", ">", "<td>", "<s>", "<start_of_turn>", "x"}
			rng := rand.New(rand.NewPCG(1, 2))
			for range 300 {
				var b strings.Builder
				for range 1 + rng.IntN(30) {
					b.WriteString(alphabet[rng.IntN(len(alphabet))])
				}
				check(b.String(), nil)
			}
		})
	}
}

// gemma3Golden is what scripts/check-gguf-tokenizer.py wrote for
// gemma3-270m: llama.cpp's count and digest of the WikiText-2 test text.
type gemma3Golden struct {
	Text                  string `json:"text"`
	TextSHA256            string `json:"text_sha256"`
	LlamaCppPythonVersion string `json:"llama_cpp_python_version"`
	Count                 int    `json:"count"`
	SHA256                string `json:"sha256"`
}

// TestGemma3TokenizerGolden tokenizes the whole WikiText-2 test text (rows
// joined with "\n\n", one call, as nwc eval does) with the tokenizer.json
// built from Gemma-3-270M's GGUF metadata and compares count and digest with
// llama.cpp's (testdata/gemma3-270m-wikitext2.json, written by
// scripts/check-gguf-tokenizer.py --golden).
func TestGemma3TokenizerGolden(t *testing.T) {
	f := openGGUF(t, "NWC_GEMMA3_GGUF", "gemma3-270m", "gemma-3-270m-q4_k_m.gguf")
	data, err := os.ReadFile(filepath.Join("testdata", "gemma3-270m-wikitext2.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g gemma3Golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	tok := buildForGGUF(t, f, 262144, tokjson.Special{BOS: 2, EOS: 1, UNK: 3, PAD: 0, AddBOS: true})
	checkPieces(t, tok, f, []pieceCase{
		{"<start_of_turn>user\nHi", []string{"<start_of_turn>", "user", "\n", "Hi"}},
		{"Hello world", []string{"Hello", "▁world"}},
		{"a  b\n\n\n", []string{"a", "  ", "b", "\n\n\n"}},
	})

	txt := wikiText(t)
	if txt.Name != g.Text {
		t.Fatalf("golden file is for %s, not %s", g.Text, txt.Name)
	}
	ids, err := tok.Encode(txt.Joined)
	if err != nil {
		t.Fatal(err)
	}
	sum := idsDigest(ids)
	t.Logf("WikiText-2 test: %d tokens, ids sha256 %s; llama.cpp (llama-cpp-python %s): %d, %s", len(ids), sum, g.LlamaCppPythonVersion, g.Count, g.SHA256)
	if len(ids) != g.Count || sum != g.SHA256 {
		t.Errorf("WikiText-2: %d tokens sha256 %s; llama.cpp: %d tokens sha256 %s", len(ids), sum, g.Count, g.SHA256)
	}
	back, err := tok.Decode(ids)
	if err != nil || back != txt.Joined {
		t.Errorf("Decode(Encode(WikiText-2)) differs from the text (%d vs %d bytes), %v", len(back), len(txt.Joined), err)
	}
}
