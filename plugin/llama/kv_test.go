//go:build cgo

package llama

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
)

// maxAbsDiff returns max|a-b| and max|b|.
func maxAbsDiff(a, b []float32) (d, m float64) {
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
		m = max(m, math.Abs(float64(b[i])))
	}
	return d, m
}

// checkKVAgainstScoring feeds toks through a Cache in chunks (a prefill of
// prefill tokens, then step tokens at a time) and compares every position's
// logits with the scoring graph's logits of the whole window.
func checkKVAgainstScoring(t *testing.T, ctx context.Context, m *Model, d *Decoder, toks []int32, prefill, step int, rel float64) {
	t.Helper()
	want, err := m.Logits(ctx, toks)
	if err != nil {
		t.Fatal(err)
	}
	V := m.Vocab()
	c := d.NewCache()
	defer c.Close()
	var got []float32
	for i := 0; i < len(toks); {
		n := min(step, len(toks)-i)
		if i == 0 {
			n = prefill
		}
		l, err := c.Forward(ctx, toks[i:i+n])
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, l...)
		i += n
		if c.Len() != i {
			t.Fatalf("cache length %d, want %d", c.Len(), i)
		}
	}
	worst, top := 0.0, 0.0
	for p := range toks {
		dd, mm := maxAbsDiff(got[p*V:(p+1)*V], want[p*V:(p+1)*V])
		worst, top = max(worst, dd), max(top, mm)
	}
	t.Logf("%d tokens (prefill %d, steps of %d): max|diff| %.3g over all positions, max|logit| %.3g", len(toks), prefill, step, worst, top)
	if worst > rel*top {
		t.Fatalf("KV-cache logits differ from the scoring graph's by %g > %g * %g", worst, rel, top)
	}
}

// TestTinyKVCacheMatchesScoring: prefill + one-token steps through the KV
// graph give the scoring graph's logits at every position, for both
// attention implementations.
func TestTinyKVCacheMatchesScoring(t *testing.T) {
	orttest.Require(t)
	gqaCfg := tinyCfg
	gqaCfg.Hidden, gqaCfg.HeadDim = 64, 16
	ctx := context.Background()
	for _, attn := range []string{AttentionStandard, AttentionGQA} {
		cfg := tinyCfg
		if attn == AttentionGQA {
			cfg = gqaCfg
		}
		t.Run(attn, func(t *testing.T) {
			w := tinyWeights(cfg, false, 7)
			src := ggufSource(t, cfg, w)
			opts := Options{Threads: 1, Build: BuildOptions{Attention: attn}}
			m, err := OpenSource(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			d, err := OpenDecoderSource(src, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			toks := tinyTokens(23, cfg.Vocab, 3)
			for _, prefill := range []int{1, 6, 23} {
				checkKVAgainstScoring(t, ctx, m, d, toks, prefill, 1, 1e-5)
			}
			// Chunked prefill: several tokens on top of a past.
			checkKVAgainstScoring(t, ctx, m, d, toks, 4, 5, 1e-5)
			// The reference forward pass agrees too (last position).
			c := d.NewCache()
			defer c.Close()
			got, err := c.Forward(ctx, toks)
			if err != nil {
				t.Fatal(err)
			}
			ref := refForward(cfg, w, toks)
			if dd, a := maxRelDiff(got, ref); dd > 1e-4*a {
				t.Fatalf("KV prefill vs reference: %g > 1e-4 * %g", dd, a)
			}
		})
	}
}

func tinyDecoder(t *testing.T) *Decoder {
	t.Helper()
	orttest.Require(t)
	w := tinyWeights(tinyCfg, true, 11)
	d, err := OpenDecoderSource(ggufSource(t, tinyCfg, w), Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// tinyText detokenizes tiny-model ids as letters: id i is "a"+i%26, and
// ids 26.. are upper case.
func tinyText(ids []int32) (string, error) {
	var b strings.Builder
	for _, id := range ids {
		if id < 26 {
			b.WriteByte(byte('a' + id))
		} else {
			b.WriteByte(byte('A' + (id-26)%26))
		}
	}
	return b.String(), nil
}

func TestGenerateGreedyAndSeeded(t *testing.T) {
	d := tinyDecoder(t)
	ctx := context.Background()
	prompt := []int32{1, 2, 3, 4}
	// Greedy = argmax of the scoring graph's logits, step by step.
	res, err := d.Generate(ctx, prompt, GenerateOptions{MaxTokens: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Tokens) != 10 || res.StopReason != StopMaxTokens {
		t.Fatalf("greedy: %d tokens, %s", len(res.Tokens), res.StopReason)
	}
	c := d.NewCache()
	seq := slices.Clone(prompt)
	for i := 0; i < 10; i++ {
		c.Close()
		l, err := c.Forward(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, argmax(l[len(l)-d.Vocab():]))
	}
	c.Close()
	if !slices.Equal(seq[len(prompt):], res.Tokens) {
		t.Fatalf("greedy %v, recomputed without cache %v", res.Tokens, seq[len(prompt):])
	}

	// Seeded sampling: same seed, same tokens; another seed differs.
	gen := func(seed uint64) []int32 {
		r, err := d.Generate(ctx, prompt, GenerateOptions{MaxTokens: 24, Sampling: Sampling{Temperature: 1.5, TopK: 30, TopP: 0.95, Seed: seed}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Tokens
	}
	a, b, c2 := gen(1), gen(1), gen(2)
	if !slices.Equal(a, b) {
		t.Fatalf("seed 1 gave %v then %v", a, b)
	}
	if slices.Equal(a, c2) {
		t.Fatalf("seeds 1 and 2 gave the same 24 tokens %v", a)
	}
	t.Logf("greedy %v; seed 1 %v; seed 2 %v", res.Tokens, a, c2)
}

func TestSampler(t *testing.T) {
	logits := []float32{0, 5, 1, 4.9, -2}
	if got := NewSampler(Sampling{}).Next(logits); got != 1 {
		t.Fatalf("greedy %d", got)
	}
	// top-k 1 is greedy whatever the temperature.
	s := NewSampler(Sampling{Temperature: 10, TopK: 1, Seed: 3})
	for i := 0; i < 50; i++ {
		if got := s.Next(logits); got != 1 {
			t.Fatalf("top-k 1 drew %d", got)
		}
	}
	// top-p 0.6 keeps only {1, 3} (p(1) = 0.52 < 0.6 < p(1)+p(3)).
	s = NewSampler(Sampling{Temperature: 1, TopP: 0.6, Seed: 4})
	seen := map[int32]int{}
	for i := 0; i < 400; i++ {
		seen[s.Next(logits)]++
	}
	if len(seen) != 2 || seen[1] == 0 || seen[3] == 0 {
		t.Fatalf("top-p 0.5 drew %v", seen)
	}
	// Temperature 1, no truncation: frequencies follow the softmax.
	s = NewSampler(Sampling{Temperature: 1, Seed: 5})
	counts := make([]int, len(logits))
	const n = 20000
	for i := 0; i < n; i++ {
		counts[s.Next(logits)]++
	}
	sum := 0.0
	for _, v := range logits {
		sum += math.Exp(float64(v))
	}
	for i, v := range logits {
		p := math.Exp(float64(v)) / sum
		if got := float64(counts[i]) / n; math.Abs(got-p) > 0.02 {
			t.Fatalf("token %d: frequency %.3f, probability %.3f", i, got, p)
		}
	}
}

func TestGenerateStops(t *testing.T) {
	d := tinyDecoder(t)
	ctx := context.Background()
	prompt := []int32{1, 2, 3, 4}
	// The tiny model's greedy output repeats one token: sample (seeded).
	smp := Sampling{Temperature: 1, Seed: 9}
	full, err := d.Generate(ctx, prompt, GenerateOptions{MaxTokens: 16, Sampling: smp, Detokenize: tinyText})
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Text) != 16 {
		t.Fatalf("text %q", full.Text)
	}
	// A stop token: generation ends before it.
	stopAt := 5
	res, err := d.Generate(ctx, prompt, GenerateOptions{MaxTokens: 16, Sampling: smp, StopTokens: []int32{full.Tokens[stopAt]}})
	if err != nil {
		t.Fatal(err)
	}
	first := slices.Index(full.Tokens, full.Tokens[stopAt])
	t.Logf("sampled %v %q", full.Tokens, full.Text)
	if first == 0 || res.StopReason != StopToken || !slices.Equal(res.Tokens, full.Tokens[:first]) {
		t.Fatalf("stop token %d: got %v (%s), full %v", full.Tokens[stopAt], res.Tokens, res.StopReason, full.Tokens)
	}
	// A stop string spanning two tokens: the text is cut before it and the
	// streamed text equals the result's text.
	stop := full.Text[7:9]
	var streamed strings.Builder
	var ids []int32
	res, err = d.Generate(ctx, prompt, GenerateOptions{MaxTokens: 16, Sampling: smp, Detokenize: tinyText, StopStrings: []string{"#none#", stop},
		OnToken: func(tk Token) error {
			streamed.WriteString(tk.Text)
			ids = append(ids, tk.ID)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	cut := strings.Index(full.Text, stop)
	if cut == 0 {
		t.Fatalf("stop string %q at the start of %q", stop, full.Text)
	}
	if res.StopReason != StopToken || res.Text != full.Text[:cut] || streamed.String() != res.Text {
		t.Fatalf("stop string %q: text %q, streamed %q, full %q", stop, res.Text, streamed.String(), full.Text)
	}
	if len(res.Tokens) != cut+2 {
		t.Fatalf("stop string %q: %d tokens, want %d", stop, len(res.Tokens), cut+2)
	}
	// Streaming without stop strings: one callback per token, same text.
	streamed.Reset()
	n := 0
	res, err = d.Generate(ctx, prompt, GenerateOptions{MaxTokens: 16, Sampling: smp, Detokenize: tinyText, OnToken: func(tk Token) error {
		n++
		streamed.WriteString(tk.Text)
		return nil
	}})
	if err != nil || n != 16 || streamed.String() != full.Text {
		t.Fatalf("stream: %v, %d callbacks, %q vs %q", err, n, streamed.String(), full.Text)
	}
	// The callback's error ends the generation.
	errStop := errors.New("enough")
	res, err = d.Generate(ctx, prompt, GenerateOptions{MaxTokens: 16, OnToken: func(tk Token) error {
		if tk.ID >= 0 && n > 0 {
			n = 0
			return errStop
		}
		return nil
	}})
	if !errors.Is(err, errStop) || len(res.Tokens) != 1 {
		t.Fatalf("callback error: %v, %d tokens", err, len(res.Tokens))
	}
	// Bad options.
	if _, err := d.Generate(ctx, prompt, GenerateOptions{StopStrings: []string{"x"}}); err == nil {
		t.Fatal("stop strings without Detokenize accepted")
	}
	if _, err := d.Generate(ctx, nil, GenerateOptions{}); err == nil {
		t.Fatal("empty prompt accepted")
	}
	if _, err := d.Generate(ctx, []int32{1, 99}, GenerateOptions{}); err == nil {
		t.Fatal("token outside the vocabulary accepted")
	}
}

func TestGenerateCancel(t *testing.T) {
	d := tinyDecoder(t)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	res, err := d.Generate(ctx, []int32{1, 2, 3}, GenerateOptions{MaxTokens: 100, OnToken: func(Token) error {
		n++
		if n == 3 {
			cancel()
		}
		return nil
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v", err)
	}
	if len(res.Tokens) != 3 {
		t.Fatalf("%d tokens after cancelling at the third", len(res.Tokens))
	}
	// Already cancelled: no prefill.
	if _, err := d.Generate(ctx, []int32{1}, GenerateOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled before: %v", err)
	}
	// A deadline in the middle of the steps.
	ctx2, cancel2 := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel2()
	time.Sleep(time.Millisecond)
	if _, err := d.Generate(ctx2, []int32{1}, GenerateOptions{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("deadline: %v", err)
	}
	// After Close.
	d.Close()
	if _, err := d.Generate(context.Background(), []int32{1}, GenerateOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestSmolLM2KVCache: on the real model, prefill + one-token steps give the
// scoring graph's logits at every position, and greedy generation continues
// the counting sentence.
func TestSmolLM2KVCache(t *testing.T) {
	requireSmolLM2(t)
	ctx := context.Background()
	m, err := Open("smollm2-135m", Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d, err := OpenDecoder("smollm2-135m", Options{Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	checkKVAgainstScoring(t, ctx, m, d, sentenceIDs, 8, 1, 1e-5)
	res, err := d.Generate(ctx, sentenceIDs[:len(sentenceIDs)-1], GenerateOptions{MaxTokens: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Tokens, []int32{sevenID, commaID}) {
		t.Fatalf("greedy after \"... six,\": %v, want [%d %d]", res.Tokens, sevenID, commaID)
	}
}

// TestStreamer: text that could start a stop string and incomplete UTF-8
// sequences are held back; what is streamed equals the final text.
func TestStreamer(t *testing.T) {
	for _, tc := range []struct {
		pieces []string
		stops  []string
		want   string
		stop   bool
	}{
		{[]string{"Hi", " \xe2\x82", "\xac", " <", "/s", ">", "x"}, []string{"</s>"}, "Hi € ", true},
		{[]string{"x", "b", "c", "e"}, []string{"ab", "bcd"}, "xbce", false},
		{[]string{"a", "b"}, []string{"bcd", "ab"}, "", true},
		{[]string{"\xe2", "\x82", "\xac"}, nil, "€", false},
	} {
		detok := func(ids []int32) (string, error) {
			var b strings.Builder
			for _, id := range ids {
				b.WriteString(tc.pieces[id])
			}
			return strings.ToValidUTF8(b.String(), "\uFFFD"), nil
		}
		var streamed strings.Builder
		st := streamer{opts: GenerateOptions{Detokenize: detok, StopStrings: tc.stops, OnToken: func(tk Token) error {
			if strings.Contains(tk.Text, "\uFFFD") {
				t.Errorf("%q: streamed an incomplete character: %q", tc.pieces, tk.Text)
			}
			streamed.WriteString(tk.Text)
			return nil
		}}}
		res := &Result{}
		stopped := false
		for i := range tc.pieces {
			res.Tokens = append(res.Tokens, int32(i))
			s, err := st.push(res, int32(i))
			if err != nil {
				t.Fatal(err)
			}
			if s {
				stopped = true
				break
			}
		}
		if err := st.flush(res); err != nil {
			t.Fatal(err)
		}
		if res.Text != tc.want || streamed.String() != tc.want || stopped != tc.stop {
			t.Errorf("%q stops %q: text %q, streamed %q, stopped %v; want %q, %v", tc.pieces, tc.stops, res.Text, streamed.String(), stopped, tc.want, tc.stop)
		}
	}
}
