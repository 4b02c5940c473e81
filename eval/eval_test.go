package eval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeLM computes logits with a function of the window and position.
type fakeLM struct {
	vocab int
	fn    func(tokens []int32, i int, row []float32)
	calls [][]int32
}

func (f *fakeLM) Vocab() int { return f.vocab }

func (f *fakeLM) Logits(ctx context.Context, tokens []int32) ([]float32, error) {
	f.calls = append(f.calls, append([]int32(nil), tokens...))
	out := make([]float32, len(tokens)*f.vocab)
	if f.fn != nil {
		for i := range tokens {
			f.fn(tokens, i, out[i*f.vocab:(i+1)*f.vocab])
		}
	}
	return out, nil
}

func seqTokens(n, vocab int) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32((i*7 + 3) % vocab)
	}
	return t
}

func near(a, b, rel float64) bool {
	return math.Abs(a-b) <= rel*math.Max(math.Abs(a), math.Abs(b))
}

func TestUniformPerplexityIsVocab(t *testing.T) {
	for _, vocab := range []int{2, 17, 1000, 49152} {
		lm := &fakeLM{vocab: vocab} // all logits 0: uniform
		res, err := Run(context.Background(), lm, nil, seqTokens(100, vocab), Options{SeqLen: 16})
		if err != nil {
			t.Fatal(err)
		}
		if !near(res.Perplexity, float64(vocab), 1e-12) {
			t.Errorf("vocab %d: uniform perplexity %.15g", vocab, res.Perplexity)
		}
		if !near(res.MeanNLL, math.Log(float64(vocab)), 1e-12) {
			t.Errorf("vocab %d: mean NLL %.15g, want log V = %.15g", vocab, res.MeanNLL, math.Log(float64(vocab)))
		}
		if res.Windows != 6 || res.TokensScored != 6*15 || res.TokensUsed != 96 || res.TextTokens != 100 {
			t.Errorf("counts: %+v", res)
		}
		if res.MeanKL != nil {
			t.Errorf("KL without a reference: %v", *res.MeanKL)
		}
	}
}

// A deterministic text (each token is the previous one + 1 mod V) and a model
// that puts logit a on that successor: p = e^a / (e^a + V - 1).
func TestPeakedDeterministicLM(t *testing.T) {
	const vocab = 50
	tokens := make([]int32, 1000)
	for i := range tokens {
		tokens[i] = int32(i % vocab)
	}
	for _, a := range []float64{0, 1, 5, 20, 80} {
		lm := &fakeLM{vocab: vocab, fn: func(tok []int32, i int, row []float32) {
			row[(int(tok[i])+1)%vocab] = float32(a)
		}}
		res, err := Run(context.Background(), lm, nil, tokens, Options{SeqLen: 128})
		if err != nil {
			t.Fatal(err)
		}
		a32 := float64(float32(a))
		p := 1 / (1 + float64(vocab-1)*math.Exp(-a32))
		if !near(res.Perplexity, 1/p, 1e-12) {
			t.Errorf("a=%g: perplexity %.15g, want %.15g", a, res.Perplexity, 1/p)
		}
		if wantNLL := math.Log1p(float64(vocab-1) * math.Exp(-a32)); !near(res.MeanNLL, wantNLL, 1e-12) {
			t.Errorf("a=%g: mean NLL %.15g, want %.15g", a, res.MeanNLL, wantNLL)
		}
		if res.Windows != 7 || res.TokensScored != 7*127 {
			t.Errorf("a=%g: %d windows, %d scored", a, res.Windows, res.TokensScored)
		}
	}
}

// The GPTQ formula: exp(sum_w mean_w * L / (n * L)); with windows of
// different difficulty it is the mean of the window means (here equal to
// the token mean, since all windows score L-1 tokens).
func TestGPTQFormulaWithUnequalWindows(t *testing.T) {
	const vocab, L = 10, 8
	tokens := make([]int32, 3*L+5) // tail of 5 dropped
	// window w: the model gives the right token logit w (w = 0, 1, 2)
	lm := &fakeLM{vocab: vocab}
	win := 0
	lm.fn = func(tok []int32, i int, row []float32) {
		if i == 0 {
			win = len(lm.calls) - 1
		}
		row[0] = float32(win) // every token of the text is 0
	}
	res, err := Run(context.Background(), lm, nil, tokens, Options{SeqLen: L})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for w := 0; w < 3; w++ {
		nll := -math.Log(math.Exp(float64(w)) / (math.Exp(float64(w)) + vocab - 1))
		sum += nll * L // GPTQ: loss * seqlen
	}
	want := math.Exp(sum / (3 * L))
	if !near(res.Perplexity, want, 1e-12) {
		t.Errorf("perplexity %.15g, want %.15g", res.Perplexity, want)
	}
	if !near(math.Exp(res.MeanNLL), want, 1e-12) {
		t.Errorf("exp(mean NLL) %.15g, want %.15g", math.Exp(res.MeanNLL), want)
	}
	if len(lm.calls) != 3 {
		t.Fatalf("%d model calls", len(lm.calls))
	}
}

func TestWindowsAreNonOverlapping(t *testing.T) {
	tokens := seqTokens(23, 100)
	lm := &fakeLM{vocab: 100}
	res, err := Run(context.Background(), lm, nil, tokens, Options{SeqLen: 5, MaxWindows: 3})
	if err != nil {
		t.Fatal(err)
	}
	if res.Windows != 3 || len(lm.calls) != 3 {
		t.Fatalf("windows %d, calls %d", res.Windows, len(lm.calls))
	}
	for w, c := range lm.calls {
		if !equal(c, tokens[w*5:(w+1)*5]) {
			t.Errorf("window %d got %v, want %v", w, c, tokens[w*5:(w+1)*5])
		}
	}
	if got := NumWindows(23, 5, 0); got != 4 {
		t.Errorf("NumWindows(23,5,0) = %d", got)
	}
	if got := NumWindows(23, 5, 9); got != 4 {
		t.Errorf("NumWindows(23,5,9) = %d", got)
	}
	if got := NumWindows(4, 5, 0); got != 0 {
		t.Errorf("NumWindows(4,5,0) = %d", got)
	}
}

func equal(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// The log-softmax must not overflow or lose the small probabilities.
func TestNLLStable(t *testing.T) {
	row := []float32{1000, 0, -1000}
	nll, err := NLL(row, 0)
	if err != nil {
		t.Fatal(err)
	}
	if nll < 0 || nll > 1e-300 { // log1p(e^-1000 + e^-2000) underflows to 0
		t.Errorf("NLL of the dominant token %g", nll)
	}
	if nll, _ := NLL(row, 1); !near(nll, 1000, 1e-15) {
		t.Errorf("NLL %g, want 1000", nll)
	}
	if nll, _ := NLL(row, 2); !near(nll, 2000, 1e-15) {
		t.Errorf("NLL %g, want 2000", nll)
	}
	// A large common offset changes nothing.
	a, _ := NLL([]float32{3, 1, 2}, 1)
	b, _ := NLL([]float32{30003, 30001, 30002}, 1)
	if !near(a, b, 1e-12) {
		t.Errorf("offset changed the NLL: %.15g vs %.15g", a, b)
	}
	want := -math.Log(math.Exp(1) / (math.Exp(3) + math.Exp(1) + math.Exp(2)))
	if !near(a, want, 1e-14) {
		t.Errorf("NLL %.15g, want %.15g", a, want)
	}
	// -Inf logits are zero probability; NaN and +Inf are errors.
	if nll, err := NLL([]float32{float32(math.Inf(-1)), 0}, 1); err != nil || nll != 0 {
		t.Errorf("NLL with a -Inf logit: %g, %v", nll, err)
	}
	if _, err := NLL([]float32{float32(math.NaN()), 0}, 1); err == nil {
		t.Error("NaN logit accepted")
	}
	if _, err := NLL([]float32{float32(math.Inf(1)), 0}, 1); err == nil {
		t.Error("+Inf logit accepted")
	}
	if _, err := NLL([]float32{0, 0}, 2); err == nil {
		t.Error("target outside the row accepted")
	}
}

func TestKLByHand(t *testing.T) {
	// P = (1/2, 1/2), Q = (3/4, 1/4): KL = 1/2 log(2/3) + 1/2 log 2 = 1/2 log(4/3).
	kl, err := KL([]float32{0, 0}, []float32{float32(math.Log(3)), 0})
	if err != nil {
		t.Fatal(err)
	}
	if want := 0.5 * math.Log(4.0/3); !near(kl, want, 1e-7) {
		t.Errorf("KL %.15g, want %.15g", kl, want)
	}
	// Exactly representable logits: P = softmax(0, ln 2 ... ) avoided; use
	// P = softmax(1, 0, 0), Q = uniform(3): KL = sum p log(3p).
	kl, _ = KL([]float32{1, 0, 0}, []float32{5, 5, 5})
	e := math.E
	p := []float64{e / (e + 2), 1 / (e + 2), 1 / (e + 2)}
	var want float64
	for _, x := range p {
		want += x * math.Log(3*x)
	}
	if !near(kl, want, 1e-13) {
		t.Errorf("KL %.15g, want %.15g", kl, want)
	}
	// Identical distributions: exactly 0, also under a common offset.
	row := []float32{0.3, -2, 7, 1.5}
	if kl, _ := KL(row, row); kl != 0 {
		t.Errorf("KL of identical rows %g", kl)
	}
	shift := []float32{10.3, 8, 17, 11.5}
	if kl, _ := KL(row, shift); math.Abs(kl) > 1e-12 {
		t.Errorf("KL of shifted rows %g", kl)
	}
	// Q = 0 where P > 0: +Inf. P = 0 where Q > 0: finite.
	inf := float32(math.Inf(-1))
	if kl, _ := KL([]float32{0, 0}, []float32{0, inf}); !math.IsInf(kl, 1) {
		t.Errorf("KL with q=0 < p: %g", kl)
	}
	if kl, _ := KL([]float32{0, inf}, []float32{0, 0}); !near(kl, math.Log(2), 1e-15) {
		t.Errorf("KL with p=0: %g, want log 2", kl)
	}
	if _, err := KL([]float32{0}, []float32{0, 0}); err == nil {
		t.Error("rows of different lengths accepted")
	}
}

func TestRunKL(t *testing.T) {
	const vocab = 3
	tokens := seqTokens(40, vocab)
	ref := &fakeLM{vocab: vocab, fn: func(_ []int32, _ int, row []float32) { row[0] = 1 }}
	same := &fakeLM{vocab: vocab, fn: func(_ []int32, _ int, row []float32) { row[0] = 1 }}
	res, err := Run(context.Background(), same, ref, tokens, Options{SeqLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	if res.MeanKL == nil || *res.MeanKL != 0 || *res.MaxKL != 0 || *res.Top1Agreement != 1 {
		t.Fatalf("identical models: KL %v max %v top1 %v", res.MeanKL, res.MaxKL, res.Top1Agreement)
	}
	// Candidate uniform: KL(P_ref || U) = sum p log(3p) at every position.
	uni := &fakeLM{vocab: vocab}
	ref.calls = nil
	res, err = Run(context.Background(), uni, ref, tokens, Options{SeqLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	e := math.E
	var want float64
	for _, x := range []float64{e / (e + 2), 1 / (e + 2), 1 / (e + 2)} {
		want += x * math.Log(3*x)
	}
	if !near(*res.MeanKL, want, 1e-12) || !near(*res.MaxKL, want, 1e-12) {
		t.Errorf("mean KL %.15g max %.15g, want %.15g", *res.MeanKL, *res.MaxKL, want)
	}
	if *res.Top1Agreement != 1 { // argmax of a uniform row is token 0, as the reference's
		t.Errorf("top-1 agreement %g", *res.Top1Agreement)
	}
	if len(ref.calls) != 4 || len(uni.calls) != 4 {
		t.Errorf("calls: ref %d, model %d", len(ref.calls), len(uni.calls))
	}
	// Perplexity is the candidate's: uniform.
	if !near(res.Perplexity, vocab, 1e-12) {
		t.Errorf("perplexity %g", res.Perplexity)
	}
}

// TestRunScoreFrom: with ScoreFrom only the later positions of each window
// count (llama-perplexity's protocol), for perplexity and KL alike.
func TestRunScoreFrom(t *testing.T) {
	const vocab = 4
	tokens := seqTokens(40, vocab)
	// Positions < 5 predict uniformly (NLL log 4); later ones put logit 2 on
	// the next token.
	lm := &fakeLM{vocab: vocab, fn: func(tok []int32, i int, row []float32) {
		if i >= 5 && i+1 < len(tok) {
			row[tok[i+1]] = 2
		}
	}}
	ref := &fakeLM{vocab: vocab}
	res, err := Run(context.Background(), lm, ref, tokens, Options{SeqLen: 10, ScoreFrom: 5})
	if err != nil {
		t.Fatal(err)
	}
	want := math.Log(math.Exp(2)+3) - 2
	if res.TokensScored != 4*4 || res.ScoreFrom != 5 || !near(res.MeanNLL, want, 1e-12) || !near(res.Perplexity, math.Exp(want), 1e-12) {
		t.Fatalf("scored %d from %d, mean NLL %.15g ppl %.15g, want %.15g", res.TokensScored, res.ScoreFrom, res.MeanNLL, res.Perplexity, want)
	}
	// KL(U || P) at every scored position is the same.
	p := math.Exp(2) / (math.Exp(2) + 3)
	q := 1 / (math.Exp(2) + 3)
	kl := 0.25*math.Log(0.25/p) + 0.75*math.Log(0.25/q)
	if !near(*res.MeanKL, kl, 1e-12) {
		t.Errorf("mean KL %.15g, want %.15g", *res.MeanKL, kl)
	}
	all, err := Run(context.Background(), lm, ref, tokens, Options{SeqLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	if all.TokensScored != 4*9 || all.MeanNLL <= res.MeanNLL {
		t.Errorf("all positions: scored %d, mean NLL %g", all.TokensScored, all.MeanNLL)
	}
}

// fixedStatsLM is a StatsLM returning its LM's logits with n zero RowStats,
// whatever their count.
type fixedStatsLM struct {
	LM
	n int
}

func (f fixedStatsLM) LogitsStats(ctx context.Context, tokens []int32) ([]float32, []RowStats, error) {
	l, err := f.Logits(ctx, tokens)
	return l, make([]RowStats, f.n), err
}

type badLM struct {
	vocab, n int
	err      error
	nan      bool
}

func (b *badLM) Vocab() int { return b.vocab }
func (b *badLM) Logits(ctx context.Context, tokens []int32) ([]float32, error) {
	if b.err != nil {
		return nil, b.err
	}
	out := make([]float32, b.n)
	if b.nan && len(out) > 0 {
		out[0] = float32(math.NaN())
	}
	return out, nil
}

func TestRunErrors(t *testing.T) {
	ctx := context.Background()
	tokens := seqTokens(20, 10)
	cases := []struct {
		name string
		lm   LM
		ref  LM
		tok  []int32
		opts Options
		want string
	}{
		{"short", &fakeLM{vocab: 10}, nil, tokens[:3], Options{SeqLen: 4}, "shorter than one window"},
		{"seqlen1", &fakeLM{vocab: 10}, nil, tokens, Options{SeqLen: 1}, "at least 2"},
		{"negative max", &fakeLM{vocab: 10}, nil, tokens, Options{SeqLen: 4, MaxWindows: -1}, "negative"},
		{"score-from past the window", &fakeLM{vocab: 10}, nil, tokens, Options{SeqLen: 4, ScoreFrom: 3}, "score-from 3"},
		{"negative score-from", &fakeLM{vocab: 10}, nil, tokens, Options{SeqLen: 4, ScoreFrom: -1}, "score-from -1"},
		{"token out of vocab", &fakeLM{vocab: 5}, nil, tokens, Options{SeqLen: 4}, "outside the model's vocabulary"},
		{"vocab mismatch", &fakeLM{vocab: 10}, &fakeLM{vocab: 11}, tokens, Options{SeqLen: 4}, "differs from the reference"},
		{"short logits", &badLM{vocab: 10, n: 39}, nil, tokens, Options{SeqLen: 4}, "returned 39 logits"},
		{"model error", &badLM{vocab: 10, err: errors.New("boom")}, nil, tokens, Options{SeqLen: 4}, "boom"},
		{"nan", &badLM{vocab: 10, n: 40, nan: true}, nil, tokens, Options{SeqLen: 4}, "NaN"},
		{"ref short", &fakeLM{vocab: 10}, &badLM{vocab: 10, n: 3}, tokens, Options{SeqLen: 4}, "reference returned 3"},
		{"ref with stats short", &fakeLM{vocab: 10}, fixedStatsLM{&badLM{vocab: 10, n: 30}, 4}, tokens, Options{SeqLen: 4}, "reference returned 30 logits"},
		{"ref stats count", &fakeLM{vocab: 10}, fixedStatsLM{&fakeLM{vocab: 10}, 3}, tokens, Options{SeqLen: 4}, "reference returned 3 row stats"},
	}
	for _, c := range cases {
		_, err := Run(ctx, c.lm, c.ref, c.tok, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestRunCancelAndProgress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var seen []Progress
	lm := &fakeLM{vocab: 4}
	res, err := Run(ctx, lm, nil, seqTokens(100, 4), Options{SeqLen: 10, Progress: func(p Progress) {
		seen = append(seen, p)
		if p.Window == 3 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	if res.Windows != 3 || len(seen) != 3 || !near(res.Perplexity, 4, 1e-12) || res.TokensScored != 27 {
		t.Errorf("partial result %+v, %d progress calls", res, len(seen))
	}
	for i, p := range seen {
		if p.Window != i+1 || p.Windows != 10 || p.TokensScored != int64(9*(i+1)) || !near(p.Perplexity, 4, 1e-12) || !math.IsNaN(p.MeanKL) {
			t.Errorf("progress %d: %+v", i, p)
		}
	}
}

func TestDefaultSeqLen(t *testing.T) {
	lm := &fakeLM{vocab: 3}
	res, err := Run(context.Background(), lm, nil, seqTokens(2*DefaultSeqLen+7, 3), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.SeqLen != 2048 || res.Windows != 2 || res.TokensScored != 2*2047 {
		t.Errorf("%+v", res)
	}
}

func TestLoadText(t *testing.T) {
	txt, err := LoadText("")
	if err != nil {
		t.Fatal(err)
	}
	if !txt.Verified || txt.SHA256 != WikiText2SHA256 || txt.Rows != 2891 || txt.Name != WikiText2Name {
		t.Errorf("default text: %+v", *txt)
	}
	if !strings.HasPrefix(txt.Joined, " = Robert Boulter = \n\n Robert Boulter is") || strings.HasSuffix(txt.Joined, "\n") {
		t.Errorf("joined text starts %q, ends %q", txt.Joined[:40], txt.Joined[len(txt.Joined)-20:])
	}
	// 2891 rows, 2890 separators of two newlines, one newline removed at the end.
	if want := wikiText2Bytes - 1 + 2890; len(txt.Joined) != want {
		t.Errorf("joined %d bytes, want %d", len(txt.Joined), want)
	}
	// The testdata copy is the embedded one.
	file, err := LoadText(filepath.Join("testdata", WikiText2Name))
	if err != nil {
		t.Fatal(err)
	}
	if !file.Verified || file.Joined != txt.Joined {
		t.Error("testdata copy differs from the embedded text")
	}
	// A changed copy under the carried name is refused.
	dir := t.TempDir()
	bad := filepath.Join(dir, WikiText2Name)
	if err := os.WriteFile(bad, append([]byte("x"), wikiText2...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadText(bad); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Errorf("changed copy: %v", err)
	}
	// Any other file is used as it is.
	other := filepath.Join(dir, "mine.txt")
	os.WriteFile(other, []byte("a\nb\n\nc\n"), 0o644)
	o, err := LoadText(other)
	if err != nil {
		t.Fatal(err)
	}
	if o.Verified || o.Joined != "a\n\nb\n\n\n\nc" || o.Rows != 4 {
		t.Errorf("other text: %+v", *o)
	}
	r, err := LoadRawText(other)
	if err != nil || r.Joined != "a\nb\n\nc\n" || r.Rows != 4 {
		t.Errorf("raw text: %+v, %v", r, err)
	}
	os.WriteFile(other, []byte{0xff, 'a'}, 0o644)
	if _, err := LoadText(other); err == nil {
		t.Error("invalid UTF-8 accepted")
	}
	if _, err := LoadText(filepath.Join(dir, "missing.txt")); err == nil {
		t.Error("missing file accepted")
	}
	cal, err := CalibrationText()
	if err != nil {
		t.Fatal(err)
	}
	if !cal.Verified || len(cal.Joined) != calibrationBytes || !strings.HasPrefix(cal.Joined, "Frankenstein;") {
		t.Errorf("calibration text: %d bytes, verified %v", len(cal.Joined), cal.Verified)
	}
	if j, n := JoinRows(""); j != "" || n != 0 {
		t.Errorf("JoinRows(\"\") = %q, %d", j, n)
	}
}

// fakeTokenizer: one token per byte.
type fakeTokenizer struct{}

func (fakeTokenizer) Encode(s string) ([]int32, error) {
	ids := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		ids[i] = int32(s[i])
	}
	return ids, nil
}

func TestEvaluateAndReport(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "t.txt")
	os.WriteFile(p, []byte(strings.Repeat("abcdefgh\n", 50)), 0o644)
	lm := &fakeLM{vocab: 256}
	rep, err := Evaluate(context.Background(), lm, lm, fakeTokenizer{}, Config{
		Model: "m", Reference: "r", TextPath: p, Options: Options{SeqLen: 64, MaxWindows: 5},
	})
	if err != nil {
		t.Fatal(err)
	}
	// 50 rows of 8 bytes joined by "\n\n": 50*8 + 49*2 = 498 tokens.
	if rep.TextTokens != 498 || rep.Windows != 5 || rep.TokensScored != 5*63 || !near(rep.Perplexity, 256, 1e-12) || *rep.MeanKL != 0 {
		t.Errorf("report %+v", rep)
	}
	var buf bytes.Buffer
	if err := rep.WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"perplexity:      256.0000", "mean KL:", "315 scored", "reference:       r"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("report text lacks %q:\n%s", s, buf.String())
		}
	}
	js, _ := json.Marshal(rep)
	var m map[string]any
	json.Unmarshal(js, &m)
	for _, k := range []string{"perplexity", "mean_nll", "tokens_scored", "tokens_per_second", "mean_kl", "text_sha256", "windows", "seq_len"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, js)
		}
	}
	// Without a reference: no KL in the JSON.
	rep, err = Evaluate(context.Background(), lm, nil, fakeTokenizer{}, Config{TextPath: p, Reference: "x", Options: Options{SeqLen: 64}})
	if err != nil {
		t.Fatal(err)
	}
	js, _ = json.Marshal(rep)
	if strings.Contains(string(js), "mean_kl") || rep.Reference != "" {
		t.Errorf("KL or reference without a reference model: %s", js)
	}
}

// bufLM is a fakeLM that also implements BufferedLM and records the
// buffers it was handed.
type bufLM struct {
	fakeLM
	dsts []*float32
}

func (b *bufLM) LogitsInto(ctx context.Context, tokens []int32, dst []float32) ([]float32, error) {
	out, err := b.Logits(ctx, tokens)
	if err != nil || cap(dst) < len(out) {
		b.dsts = append(b.dsts, nil)
		return out, err
	}
	b.dsts = append(b.dsts, &dst[:1][0])
	return append(dst[:0], out...), nil
}

// TestBufferedLMReusesBuffer: a BufferedLM gets back the buffer of the
// previous window, and the result equals the plain LM's.
func TestBufferedLMReusesBuffer(t *testing.T) {
	const vocab = 5
	fn := func(tokens []int32, i int, row []float32) { row[tokens[i]%vocab] = float32(i%3) + 1 }
	tokens := seqTokens(40, vocab)
	plain, err := Run(context.Background(), &fakeLM{vocab: vocab, fn: fn}, nil, tokens, Options{SeqLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	b := &bufLM{fakeLM: fakeLM{vocab: vocab, fn: fn}}
	got, err := Run(context.Background(), b, nil, tokens, Options{SeqLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	if got.Perplexity != plain.Perplexity {
		t.Fatalf("perplexity %g, plain LM %g", got.Perplexity, plain.Perplexity)
	}
	if len(b.dsts) != 4 || b.dsts[0] != nil {
		t.Fatalf("buffers %v: want a nil first buffer and 4 calls", b.dsts)
	}
	for i := 2; i < len(b.dsts); i++ {
		if b.dsts[i] == nil || b.dsts[i] != b.dsts[1] {
			t.Fatalf("window %d got buffer %p, window 1 %p: not reused", i, b.dsts[i], b.dsts[1])
		}
	}
}

// TestRunFirstWindowMerges: ranges of windows (FirstWindow, MaxWindows)
// evaluate exactly the windows of a whole run, and their results merged by
// tokens_scored give the whole run's NLL, KL and top-1 agreement.
func TestRunFirstWindowMerges(t *testing.T) {
	const vocab = 5
	tokens := seqTokens(63, vocab) // 6 windows of 10, 3 tokens dropped
	lm := &fakeLM{vocab: vocab, fn: func(win []int32, i int, row []float32) {
		row[win[i]] = 1.5
		row[(int(win[i])+i)%vocab] += 0.7
	}}
	ref := &fakeLM{vocab: vocab, fn: func(win []int32, i int, row []float32) { row[(int(win[i])+1)%vocab] = 2 }}
	whole, err := Run(context.Background(), lm, ref, tokens, Options{SeqLen: 10})
	if err != nil {
		t.Fatal(err)
	}
	var nll, kl, top1 float64
	var scored int64
	windows := 0
	for _, r := range [][2]int{{0, 2}, {2, 1}, {3, 0}} {
		res, err := Run(context.Background(), lm, ref, tokens, Options{SeqLen: 10, FirstWindow: r[0], MaxWindows: r[1]})
		if err != nil {
			t.Fatal(err)
		}
		if res.FirstWindow != r[0] {
			t.Errorf("first window %d, want %d", res.FirstWindow, r[0])
		}
		nll += res.MeanNLL * float64(res.TokensScored)
		kl += *res.MeanKL * float64(res.TokensScored)
		top1 += *res.Top1Agreement * float64(res.TokensScored)
		scored += res.TokensScored
		windows += res.Windows
	}
	if windows != whole.Windows || scored != whole.TokensScored {
		t.Fatalf("ranges cover %d windows / %d predictions, whole run %d / %d", windows, scored, whole.Windows, whole.TokensScored)
	}
	s := float64(scored)
	if !near(nll/s, whole.MeanNLL, 1e-12) || !near(kl/s, *whole.MeanKL, 1e-12) || !near(top1/s, *whole.Top1Agreement, 1e-12) {
		t.Errorf("merged nll %g kl %g top1 %g, whole %g %g %g", nll/s, kl/s, top1/s, whole.MeanNLL, *whole.MeanKL, *whole.Top1Agreement)
	}
	if !near(math.Exp(nll/s), whole.Perplexity, 1e-12) {
		t.Errorf("merged perplexity %g, whole %g", math.Exp(nll/s), whole.Perplexity)
	}
	if _, err := Run(context.Background(), lm, ref, tokens, Options{SeqLen: 10, FirstWindow: 6}); err == nil {
		t.Error("first window past the text accepted")
	}
	if _, err := Run(context.Background(), lm, ref, tokens, Options{SeqLen: 10, FirstWindow: -1}); err == nil {
		t.Error("negative first window accepted")
	}
}

// wavyLMs returns a model and a reference whose logits vary with the
// position and token; with zeros, the reference gives one token of each
// row zero probability.
func wavyLMs(vocab int, zeros bool) (lm, ref *fakeLM) {
	lm = &fakeLM{vocab: vocab, fn: func(win []int32, i int, row []float32) {
		for j := range row {
			row[j] = float32(math.Sin(float64(j*7+i*3+int(win[i])))) * 4
		}
	}}
	ref = &fakeLM{vocab: vocab, fn: func(win []int32, i int, row []float32) {
		for j := range row {
			row[j] = float32(math.Cos(float64(j*5+i+int(win[i])))) * 3
		}
		if zeros {
			row[(i*11)%vocab] = float32(math.Inf(-1))
		}
	}}
	return lm, ref
}

// runIdentical runs each (model, reference, options) case and fails unless
// every result equals the first bit for bit.
func runIdentical(t *testing.T, tokens []int32, cases []struct {
	lm, ref LM
	opts    Options
}) {
	t.Helper()
	var got []Result
	for _, c := range cases {
		res, err := Run(context.Background(), c.lm, c.ref, tokens, c.opts)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, res)
	}
	a := got[0]
	for _, b := range got[1:] {
		if a.MeanNLL != b.MeanNLL || *a.MeanKL != *b.MeanKL || *a.MaxKL != *b.MaxKL ||
			*a.Top1Agreement != *b.Top1Agreement || a.Perplexity != b.Perplexity || *a.MeanKL == 0 {
			t.Fatalf("results differ: %+v vs %+v", b, a)
		}
	}
}

// TestRunWorkersIdentical: scoring a window on several goroutines gives
// bit-identical results to one.
func TestRunWorkersIdentical(t *testing.T) {
	lm, ref := wavyLMs(37, false)
	runIdentical(t, seqTokens(300, 37), []struct {
		lm, ref LM
		opts    Options
	}{{lm, ref, Options{SeqLen: 70, Workers: 1}}, {lm, ref, Options{SeqLen: 70, Workers: 2}}, {lm, ref, Options{SeqLen: 70, Workers: 5}}})
}

// statsLM is a reference that returns its rows' stats with its logits, as
// the CLI's reference cache does.
type statsLM struct{ LM }

func (s statsLM) LogitsStats(ctx context.Context, tokens []int32) ([]float32, []RowStats, error) {
	l, err := s.Logits(ctx, tokens)
	if err != nil {
		return nil, nil, err
	}
	st, err := Stats(l, s.Vocab(), 3)
	return l, st, err
}

// TestRunStatsIdentical: a reference that supplies its row stats gives the
// same result, bit for bit, as one whose stats Run computes.
func TestRunStatsIdentical(t *testing.T) {
	lm, ref := wavyLMs(41, true)
	opts := Options{SeqLen: 90, ScoreFrom: 7}
	runIdentical(t, seqTokens(400, 41), []struct {
		lm, ref LM
		opts    Options
	}{{lm, ref, opts}, {lm, statsLM{ref}, opts}})
}

func TestStats(t *testing.T) {
	inf := float32(math.Inf(-1))
	st, err := Stats([]float32{1, 3, 3, inf, inf, 2}, 3, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Argmax != 1 || st[0].M != 3 || st[1].Argmax != 2 || st[1].M != 2 || st[1].L != 0 {
		t.Fatalf("stats %+v", st)
	}
	if want := math.Log(math.Exp(1) + 2*math.Exp(3)); math.Abs(st[0].M+st[0].L-want) > 1e-12 {
		t.Fatalf("log-sum-exp %v, want %v", st[0].M+st[0].L, want)
	}
	for _, bad := range [][]float32{{1, float32(math.NaN())}, {inf, inf}, {1, float32(math.Inf(1))}} {
		if _, err := Stats(append([]float32{0, 0}, bad...), 2, 1); err == nil || !strings.Contains(err.Error(), "row 1") {
			t.Errorf("Stats(%v): err %v, want an error naming row 1", bad, err)
		}
	}
	if _, err := Stats(make([]float32, 5), 2, 1); err == nil {
		t.Error("5 logits in rows of 2: no error")
	}
}

// BenchmarkScoreWindow: scoring one window of 2048 positions over a
// 49152-token vocabulary (smollm2's), one goroutine against all.
func BenchmarkScoreWindow(b *testing.B) {
	const vocab, seq = 49152, 2048
	logits := make([]float32, vocab*seq)
	ref := make([]float32, vocab*seq)
	for i := range logits {
		logits[i] = float32(math.Sin(float64(i) * 0.001))
		ref[i] = float32(math.Cos(float64(i) * 0.0013))
	}
	win := seqTokens(seq, vocab)
	refStats, err := Stats(ref, vocab, 0)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		stats []RowStats
	}{{"", nil}, {"/cached-ref-stats", refStats}} {
		for _, w := range []int{1, 0} {
			b.Run(fmt.Sprintf("workers=%d%s", scoreWorkers(w), c.name), func(b *testing.B) {
				for b.Loop() {
					if _, err := scoreWindow(logits, ref, c.stats, win, vocab, 0, scoreWorkers(w)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
