//go:build cgo

package bert

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/nwc-project/nwc/eval/embed"
	"github.com/nwc-project/nwc/internal/tensortest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
)

// openMiniLM opens the cached minilm-l6 source, or skips (fails with
// NWC_REQUIRE_MODELS=1).
func openMiniLM(t *testing.T) tensor.Source {
	t.Helper()
	tensortest.RequireModel(t, "minilm-l6")
	src, _, err := loader.Open("minilm-l6", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

type golden struct {
	Sentences []string  `json:"sentences"`
	TokenIDs  [][]int32 `json:"token_ids"`
	Dim       int       `json:"dim"`
	MaxSeqLen int       `json:"max_seq_length"`
	Emb       string    `json:"embeddings_f32le_base64"`
}

func loadGolden(t *testing.T, path string) (golden, [][]float32) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(data, &g); err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(g.Emb)
	if err != nil || len(raw) != 4*g.Dim*len(g.Sentences) {
		t.Fatalf("golden embeddings: %d bytes, err %v", len(raw), err)
	}
	embs := make([][]float32, len(g.Sentences))
	for i := range embs {
		embs[i] = make([]float32, g.Dim)
		for j := range embs[i] {
			embs[i][j] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*(i*g.Dim+j):]))
		}
	}
	return g, embs
}

func cosine(a, b []float32) float64 {
	var ab, aa, bb float64
	for i := range a {
		ab += float64(a[i]) * float64(b[i])
		aa += float64(a[i]) * float64(a[i])
		bb += float64(b[i]) * float64(b[i])
	}
	return ab / math.Sqrt(aa*bb)
}

// TestGoldenEmbeddings: the Go runtime's embeddings of the golden sentences
// match sentence-transformers' (scripts/check-embeddings.py): the same
// token ids, cosine >= 0.9999 for every sentence.
func TestGoldenEmbeddings(t *testing.T) {
	src := openMiniLM(t)
	g, want := loadGolden(t, "testdata/golden-minilm-l6.json")
	m, err := OpenSource(src, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cfg := m.Config()
	if cfg.Layers != 6 || cfg.Hidden != 384 || cfg.Heads != 12 || cfg.MaxSeqLen != g.MaxSeqLen || !cfg.Normalize {
		t.Fatalf("config %+v", cfg)
	}
	for i, s := range g.Sentences {
		ids, err := m.Tokenizer().EncodeSentence(s, cfg.MaxSeqLen)
		if err != nil {
			t.Fatalf("sentence %d: %v", i, err)
		}
		if !slices.Equal(ids, g.TokenIDs[i]) {
			t.Errorf("sentence %d %.40q: ids %v, sentence-transformers %v", i, s, ids, g.TokenIDs[i])
		}
	}
	got, err := m.Embed(context.Background(), g.Sentences)
	if err != nil {
		t.Fatal(err)
	}
	worst, maxAbs := 1.0, 0.0
	for i := range got {
		c := cosine(got[i], want[i])
		worst = min(worst, c)
		for j := range got[i] {
			maxAbs = max(maxAbs, math.Abs(float64(got[i][j]-want[i][j])))
		}
		if c < 0.9999 {
			t.Errorf("sentence %d %.40q: cosine %.7f to sentence-transformers", i, g.Sentences[i], c)
		}
	}
	t.Logf("%d sentences: min cosine %.9f (1 - %.2e), max |diff| %.2e", len(got), worst, 1-worst, maxAbs)

	// Batching does not change the result: one sentence at a time.
	one, err := m.Embed(context.Background(), g.Sentences[3:4])
	if err != nil {
		t.Fatal(err)
	}
	if c := cosine(one[0], got[3]); c < 0.999999 {
		t.Errorf("sentence 3 alone vs in a batch: cosine %.8f", c)
	}
}

// TestEvalSetParity compares the embeddings of eval/embed's evaluation
// sentences with sentence-transformers' (scripts/check-embeddings.py
// --eval-set 1000 writes them; NWC_EMBED_REF names the file; skipped
// without it).
func TestEvalSetParity(t *testing.T) {
	path := os.Getenv("NWC_EMBED_REF")
	if path == "" {
		t.Skip("NWC_EMBED_REF not set (scripts/check-embeddings.py --eval-set 1000 writes the file)")
	}
	src := openMiniLM(t)
	g, want := loadGolden(t, path)
	sentences, err := embed.Sentences(len(g.Sentences))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sentences, g.Sentences) {
		t.Fatal("the file's sentences are not eval/embed's")
	}
	m, err := OpenSource(src, Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got, err := m.Embed(context.Background(), g.Sentences)
	if err != nil {
		t.Fatal(err)
	}
	worst, idsDiffer := 1.0, 0
	for i := range got {
		ids, err := m.Tokenizer().EncodeSentence(g.Sentences[i], m.Config().MaxSeqLen)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids, g.TokenIDs[i]) {
			idsDiffer++
		}
		c := cosine(got[i], want[i])
		worst = min(worst, c)
		if c < 0.9999 {
			t.Errorf("sentence %d: cosine %.7f", i, c)
		}
	}
	if idsDiffer > 0 {
		t.Errorf("%d sentences tokenized differently", idsDiffer)
	}
	t.Logf("%d evaluation sentences: min cosine to sentence-transformers %.9f (1 - %.2e), token ids identical", len(got), worst, 1-worst)
}
