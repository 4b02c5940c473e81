// Package embed measures how faithfully a compressed sentence encoder
// reproduces its reference's embeddings: cosine similarity per sentence,
// and agreement of the top-k nearest neighbours (retrieval) over a fixed
// set of sentences taken from the WikiText-2 test text the project
// carries (Sentences).
//
// It is pure Go; the encoders (plugin/bert) are passed in as Embedders.
package embed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"

	"github.com/nwc-project/nwc/eval"
)

// Defaults.
const (
	// DefaultSentences is the size of the evaluation set.
	DefaultSentences = 1000
	// DefaultTopK is k of the top-k retrieval agreement.
	DefaultTopK = 10
	// MinWords and MaxWords bound a sentence's length in words
	// (whitespace-separated tokens, punctuation included).
	MinWords, MaxWords = 5, 60
)

// SentenceRule describes Sentences in words (for reports).
const SentenceRule = "sentences of the WikiText-2 raw test text (eval/testdata): every line that is not a heading (\" = ... = \") split after each \" . \", \" ? \" or \" ! \" token; " +
	"those of 5-60 whitespace-separated tokens, first occurrence only; n taken evenly spaced over the whole text (index i*count/n)"

// ErrTooFew is returned when the text has fewer qualifying sentences than
// asked for.
var ErrTooFew = errors.New("embed: too few sentences")

// Split returns the qualifying sentences of text in order (SentenceRule),
// each once.
func Split(text string) []string {
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "=") {
			continue
		}
		words := strings.Fields(trimmed)
		start := 0
		for i, w := range words {
			if w != "." && w != "?" && w != "!" && i != len(words)-1 {
				continue
			}
			s := words[start : i+1]
			start = i + 1
			if len(s) < MinWords || len(s) > MaxWords {
				continue
			}
			j := strings.Join(s, " ")
			if !seen[j] {
				seen[j] = true
				out = append(out, j)
			}
		}
	}
	return out
}

// Sentences returns n sentences of the carried WikiText-2 test text, evenly
// spaced over all qualifying ones (SentenceRule); the same n always gives
// the same list.
func Sentences(n int) ([]string, error) {
	t, err := eval.LoadRawText("")
	if err != nil {
		return nil, err
	}
	return Pick(Split(t.Joined), n)
}

// Pick returns n of all, at indices i*len(all)/n.
func Pick(all []string, n int) ([]string, error) {
	if n <= 0 || n > len(all) {
		return nil, fmt.Errorf("%w: %d asked for, the text has %d", ErrTooFew, n, len(all))
	}
	out := make([]string, n)
	for i := range out {
		out[i] = all[int(int64(i)*int64(len(all))/int64(n))]
	}
	return out, nil
}

// Embedder turns sentences into embeddings (plugin/bert.Model).
type Embedder interface {
	Embed(ctx context.Context, sentences []string) ([][]float32, error)
}

// Result is the fidelity of a model's embeddings to the reference's.
type Result struct {
	Sentences int `json:"sentences"`
	// MeanCosine, MinCosine and P1Cosine (the 1st percentile) of the
	// cosine between each sentence's embedding and its reference.
	MeanCosine float64 `json:"mean_cosine"`
	MinCosine  float64 `json:"min_cosine"`
	P1Cosine   float64 `json:"p1_cosine"`
	// TopK and TopKAgreement: for each sentence as a query, the overlap of
	// its k nearest other sentences (cosine) under the model's and the
	// reference's embeddings, |A ∩ B| / k, averaged over the queries.
	TopK          int     `json:"top_k"`
	TopKAgreement float64 `json:"top_k_agreement"`
}

// Evaluate embeds sentences with model and ref and compares them.
func Evaluate(ctx context.Context, model, ref Embedder, sentences []string, k int) (Result, error) {
	want, err := ref.Embed(ctx, sentences)
	if err != nil {
		return Result{}, fmt.Errorf("embed: reference: %w", err)
	}
	got, err := model.Embed(ctx, sentences)
	if err != nil {
		return Result{}, fmt.Errorf("embed: model: %w", err)
	}
	return Compare(ctx, want, got, k)
}

// unit returns the rows scaled to unit L2 norm, in float64 (a zero row
// stays zero).
func unit(rows [][]float32) [][]float64 {
	out := make([][]float64, len(rows))
	for i, r := range rows {
		v := make([]float64, len(r))
		var ss float64
		for j, x := range r {
			v[j] = float64(x)
			ss += v[j] * v[j]
		}
		if ss > 0 {
			n := math.Sqrt(ss)
			for j := range v {
				v[j] /= n
			}
		}
		out[i] = v
	}
	return out
}

func dot(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// Compare computes the Result of got against the reference want (the
// same sentences, in order).
func Compare(ctx context.Context, want, got [][]float32, k int) (Result, error) {
	n := len(want)
	if n != len(got) || n == 0 {
		return Result{}, fmt.Errorf("embed: %d reference embeddings, %d to compare", n, len(got))
	}
	if k <= 0 || k >= n {
		return Result{}, fmt.Errorf("embed: top-k %d needs 1 <= k < %d sentences", k, n)
	}
	for i := range want {
		if len(want[i]) == 0 || len(want[i]) != len(got[i]) {
			return Result{}, fmt.Errorf("embed: sentence %d: embeddings of %d and %d values", i, len(want[i]), len(got[i]))
		}
	}
	w, g := unit(want), unit(got)
	cos := make([]float64, n)
	var sum float64
	for i := range w {
		cos[i] = dot(w[i], g[i])
		sum += cos[i]
	}
	sorted := slices.Clone(cos)
	sort.Float64s(sorted)
	r := Result{Sentences: n, MeanCosine: sum / float64(n), MinCosine: sorted[0], P1Cosine: sorted[int(0.01*float64(n-1))], TopK: k}
	var agree float64
	simW, simG := make([]float64, n), make([]float64, n)
	for q := 0; q < n; q++ {
		if q%64 == 0 {
			if err := ctx.Err(); err != nil {
				return Result{}, err
			}
		}
		for j := 0; j < n; j++ {
			simW[j], simG[j] = dot(w[q], w[j]), dot(g[q], g[j])
		}
		a, b := topK(simW, q, k), topK(simG, q, k)
		inter := 0
		for _, x := range a {
			if slices.Contains(b, x) {
				inter++
			}
		}
		agree += float64(inter) / float64(k)
	}
	r.TopKAgreement = agree / float64(n)
	return r, nil
}

// topK returns the indices of the k largest sim values other than skip
// (ties: the lower index first).
func topK(sim []float64, skip, k int) []int {
	idx := make([]int, 0, len(sim)-1)
	for j := range sim {
		if j != skip {
			idx = append(idx, j)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return sim[idx[a]] > sim[idx[b]] })
	return idx[:k]
}
