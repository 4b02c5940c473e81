//go:build cgo

package tokenizer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nwc-project/nwc/eval"
	"github.com/nwc-project/nwc/loader/gguf"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/tokjson"
)

// Checks on the reference model smollm2-135m (SmolLM2-135M-Instruct Q4_1
// GGUF) over the whole WikiText-2 test text (rows joined with "\n\n").
//
// Environment:
//   NWC_CACHE           cache root (default ~/.cache/nwc)
//   NWC_SMOLLM2_GGUF    the GGUF (default: the reference model in the cache)
//   NWC_CHECK_PYTHON    python for scripts/tokenizer_check.py (default
//                       $NWC_CACHE/venv-check/bin/python); it needs the
//                       `tokenizers` and `llama_cpp` (llama-cpp-python)
//                       packages, `transformers` optionally
//   NWC_REQUIRE_MODELS  1: a missing model, python or package fails instead
//                       of skipping

// The ids of the WikiText-2 test text under the SmolLM2 tokenizer, as the
// Python `tokenizers` package and llama.cpp give them (docs/EVAL.md).
const (
	wikiText2SmolLM2Count  = 301948
	wikiText2SmolLM2SHA256 = "c2727d067d1953ad93bac0eeb237f1f6b67ee76b0e9b4d8da60fd81a6c45a742"
)

func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func smollm2(t *testing.T) *gguf.File {
	return openGGUF(t, "NWC_SMOLLM2_GGUF", "smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf")
}

// openGGUF opens the GGUF named by the environment variable env, else the
// reference model's file in the cache; it skips (fails with
// NWC_REQUIRE_MODELS=1) when there is none.
func openGGUF(t *testing.T, env, model, file string) *gguf.File {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = filepath.Join(refmodel.CacheDir(), "models", model, file)
	}
	f, err := gguf.Open(p)
	if err != nil {
		skipOrFail(t, "%s GGUF not available (run make setup or set %s): %v", model, env, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// idsDigest is the sha256 of ids as consecutive little-endian uint32, as
// scripts/tokenizer_check.py computes it.
var idsDigest = tokjson.IDsSHA256

// buildForGGUF builds the tokenizer of f from its metadata (in an empty
// cache) and checks its vocabulary size and special tokens.
func buildForGGUF(t *testing.T, f *gguf.File, vocab int, want tokjson.Special) *Tokenizer {
	t.Helper()
	t.Setenv("NWC_CACHE", t.TempDir()) // build, don't reuse a cached file
	tok, err := ForSource(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	if tok.VocabSize() != vocab {
		t.Errorf("vocab size %d, want %d", tok.VocabSize(), vocab)
	}
	sp, err := tokjson.SpecialTokens(f.Metadata())
	if err != nil || sp != want {
		t.Errorf("special tokens %+v, %v; want %+v", sp, err, want)
	}
	return tok
}

// pieceCase is a text and the tokens it must encode to.
type pieceCase struct {
	text string
	want []string
}

// checkPieces encodes each text and compares the tokens (as the GGUF's
// tokenizer.ggml.tokens name them) with want.
func checkPieces(t *testing.T, tok *Tokenizer, f *gguf.File, cases []pieceCase) {
	t.Helper()
	tokens, ok := f.GetStrings("tokenizer.ggml.tokens")
	if !ok {
		t.Fatal("no tokenizer.ggml.tokens")
	}
	for _, c := range cases {
		ids, err := tok.Encode(c.text)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]string, len(ids))
		for i, id := range ids {
			got[i] = tokens[id]
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("Encode(%q) = %q, want %q", c.text, got, c.want)
		}
	}
}

func wikiText(t *testing.T) *eval.Text {
	t.Helper()
	txt, err := eval.LoadText("")
	if err != nil {
		t.Fatal(err)
	}
	return txt
}

func TestSmolLM2Tokenizer(t *testing.T) {
	f := smollm2(t)
	tok := buildForGGUF(t, f, 49152, tokjson.Special{BOS: 1, EOS: 2, UNK: 0, PAD: 2})
	checkPieces(t, tok, f, []pieceCase{
		{"<|im_start|>user\nHi<|im_end|>", []string{"<|im_start|>", "user", "Ċ", "Hi", "<|im_end|>"}},
		{" 2015", []string{"Ġ", "2", "0", "1", "5"}},
		{"Hello, world!", []string{"Hello", ",", "Ġworld", "!"}},
	})

	txt := wikiText(t)
	t0 := time.Now()
	ids, err := tok.Encode(txt.Joined)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("WikiText-2 test: %d bytes -> %d tokens in %v, ids sha256 %s", len(txt.Joined), len(ids), time.Since(t0), idsDigest(ids))
	if len(ids) != wikiText2SmolLM2Count {
		t.Errorf("WikiText-2 token count %d, want %d", len(ids), wikiText2SmolLM2Count)
	}
	if wikiText2SmolLM2SHA256 != "" && idsDigest(ids) != wikiText2SmolLM2SHA256 {
		t.Errorf("WikiText-2 ids sha256 %s, want %s", idsDigest(ids), wikiText2SmolLM2SHA256)
	}
	back, err := tok.Decode(ids)
	if err != nil || back != txt.Joined {
		t.Errorf("Decode(Encode(WikiText-2)) differs from the text (%d vs %d bytes), %v", len(back), len(txt.Joined), err)
	}
}

type checkRecord struct {
	Impl       string `json:"impl"`
	Version    string `json:"version"`
	Count      int    `json:"count"`
	SHA256     string `json:"sha256"`
	TextSHA256 string `json:"text_sha256"`
	Path       string `json:"path"`
	Error      string `json:"error"`
	Missing    bool   `json:"missing"`
}

// TestWikiTextMatchesReferences compares the Go ids of the WikiText-2 test
// text with (a) the Python `tokenizers` package on the same tokenizer.json
// and (b) llama.cpp reading the GGUF itself (scripts/tokenizer_check.py).
// transformers' GGUF converter is run too when installed, and only logged.
func TestWikiTextMatchesReferences(t *testing.T) {
	f := smollm2(t)
	python := os.Getenv("NWC_CHECK_PYTHON")
	if python == "" {
		python = filepath.Join(refmodel.CacheDir(), "venv-check", "bin", "python")
	}
	if _, err := os.Stat(python); err != nil {
		skipOrFail(t, "check python not available (run make setup or set NWC_CHECK_PYTHON): %v", err)
	}
	t.Setenv("NWC_CACHE", t.TempDir())
	data, _, err := tokjson.JSONForSource(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tj := filepath.Join(dir, "tokenizer.json")
	if err := os.WriteFile(tj, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tok, err := FromBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	txt := wikiText(t)
	ids, err := tok.Encode(txt.Joined)
	if err != nil {
		t.Fatal(err)
	}
	goSum := idsDigest(ids)
	textSum := sha256.Sum256([]byte(txt.Joined))

	script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "tokenizer_check.py"))
	if err != nil {
		t.Fatal(err)
	}
	textPath, _ := filepath.Abs(filepath.Join("..", "..", "eval", "testdata", eval.WikiText2Name))
	cmd := exec.Command(python, script, "--text", textPath, "--tokenizer-json", tj, "--gguf", f.Name(),
		"--impl", "tokenizers,llama.cpp,transformers-gguf")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	recs := map[string]checkRecord{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var r checkRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("script output %q: %v", sc.Text(), err)
		}
		recs[r.Impl] = r
	}
	t.Logf("go (daulet/tokenizers): %d tokens, sha256 %s", len(ids), goSum)
	for _, name := range []string{"tokenizers", "llama.cpp", "transformers-gguf"} {
		t.Run(name, func(t *testing.T) {
			r, ok := recs[name]
			switch {
			case !ok:
				t.Fatalf("no result from the script")
			case r.Error != "" && name == "transformers-gguf":
				t.Skipf("not run (informational only): %s", r.Error)
			case r.Error != "" && r.Missing && name == "llama.cpp" && os.Getenv("NWC_REQUIRE_LLAMA_CPP") != "1":
				// llama-cpp-python compiles llama.cpp from source (many
				// minutes on 2 cores), so `make test` leaves it to `make
				// check-tokenizer`; the pinned digest (TestWikiTextDigest)
				// still holds the ids it agreed with.
				t.Skipf("%s (run make check-tokenizer for this check)", r.Error)
			case r.Error != "" && r.Missing:
				skipOrFail(t, "%s (install the check packages listed in docs/EVAL.md)", r.Error)
			case r.Error != "":
				t.Fatal(r.Error)
			}
			if r.TextSHA256 != hex.EncodeToString(textSum[:]) {
				t.Errorf("the script tokenized other text (sha256 %s)", r.TextSHA256)
			}
			same := r.Count == len(ids) && r.SHA256 == goSum
			t.Logf("%s %s: %d tokens, sha256 %s, identical to Go: %v %s", name, r.Version, r.Count, r.SHA256, same, r.Path)
			if !same && name != "transformers-gguf" {
				t.Errorf("%s %s: %d tokens sha256 %s; Go: %d tokens sha256 %s", name, r.Version, r.Count, r.SHA256, len(ids), goSum)
			}
		})
	}
}
