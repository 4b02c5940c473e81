// Package eval measures language-model perplexity the way GPTQ and most
// quantization papers do, and the KL divergence of a model's next-token
// distributions from a reference model's.
//
// Convention (docs/EVAL.md): the text's rows are joined with "\n\n" and
// tokenized once without special tokens (no BOS); the ids are cut into
// nsamples = len(ids) / seqLen non-overlapping windows of seqLen tokens (the
// ragged tail is dropped); each window is run through the model on its own,
// and position i's logits predict token i+1, so a window scores seqLen-1
// tokens. With nll_w the mean negative log-likelihood of window w,
//
//	PPL = exp( sum_w (nll_w * seqLen) / (nsamples * seqLen) )
//
// which is exactly the evaluation loop of GPTQ (opt.py / llama.py: loss.float() *
// model.seqlen, summed, divided by nsamples * seqlen); since every window
// scores the same seqLen-1 tokens it equals exp(mean NLL over all
// nsamples*(seqLen-1) scored tokens). Log-softmax is computed in float64.
//
// The package does not depend on any model runtime: a runtime satisfies LM.
package eval

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultSeqLen is the window length of the GPTQ convention.
const DefaultSeqLen = 2048

// LM is a causal language model: Logits returns the next-token logits for
// every position of tokens, as len(tokens) rows of Vocab() float32 values
// (row-major), row i being the distribution of the token after tokens[i].
// Each call is an independent sequence (no state carried between calls).
type LM interface {
	Logits(ctx context.Context, tokens []int32) ([]float32, error)
	Vocab() int
}

// BufferedLM is an LM that can write a window's logits into a buffer the
// caller reuses: Evaluate then keeps one buffer for the model across windows
// instead of a fresh seqLen x Vocab() slice per window (2 GB for a
// 262k-token vocabulary and 2048-token windows).
type BufferedLM interface {
	LM
	// LogitsInto is Logits writing into dst when it has the capacity (a new
	// slice otherwise); it returns the logits.
	LogitsInto(ctx context.Context, tokens []int32, dst []float32) ([]float32, error)
}

// RowStats summarizes one row of logits: log(sum(exp(row))) = M + L (M the
// largest logit, L = log1p of the sum of the others' exp(z - M), as float64)
// and Argmax, the first index of the largest logit.
type RowStats struct {
	M, L   float64
	Argmax int32
}

// StatsLM is an LM that returns each window row's RowStats with its logits,
// e.g. from a cache: an evaluation against a reference then computes the
// reference's log-sum-exps once for every model compared with it instead of
// once per model. The stats must be those Stats computes from the logits
// (the result is then bit for bit the same as without them).
type StatsLM interface {
	LM
	LogitsStats(ctx context.Context, tokens []int32) ([]float32, []RowStats, error)
}

// Stats returns the RowStats of every row of logits (rows of vocab values),
// computed on workers goroutines (<= 0: GOMAXPROCS). A row with a NaN or +Inf
// logit, or with only -Inf, is an error naming the row.
func Stats(logits []float32, vocab, workers int) ([]RowStats, error) {
	if vocab <= 0 || len(logits)%vocab != 0 {
		return nil, fmt.Errorf("eval: %d logits are not rows of %d", len(logits), vocab)
	}
	n := len(logits) / vocab
	out := make([]RowStats, n)
	err := parallelRows(n, scoreWorkers(workers), func(i int) error {
		st, err := rowStats(logits[i*vocab : (i+1)*vocab])
		if err != nil {
			return fmt.Errorf("row %d: %w", i, err)
		}
		out[i] = st
		return nil
	})
	return out, err
}

// Tokenizer turns text into token ids (without special tokens).
// *tokenizer.Tokenizer (plugin/tokenizer) satisfies it.
type Tokenizer interface {
	Encode(text string) ([]int32, error)
}

// Options controls Run.
type Options struct {
	// SeqLen is the window length (default DefaultSeqLen).
	SeqLen int
	// MaxWindows, when > 0, evaluates only the first MaxWindows windows
	// (from FirstWindow on).
	MaxWindows int
	// FirstWindow skips the text's first FirstWindow windows: a long run can
	// be split into ranges of windows whose results merge exactly (sum
	// MeanNLL, MeanKL and Top1Agreement weighted by TokensScored).
	FirstWindow int
	// ScoreFrom, when > 0, scores only the predictions made at window
	// positions >= ScoreFrom (each window still runs whole). llama.cpp's
	// llama-perplexity scores from SeqLen/2 (docs/EVAL.md): ScoreFrom =
	// SeqLen/2 reproduces its protocol on the same windows.
	ScoreFrom int
	// Workers is the number of goroutines that score a window's positions
	// (0: GOMAXPROCS); the result does not depend on it.
	Workers int
	// Progress, when set, is called after each window.
	Progress func(Progress)
}

// Progress reports a run in progress.
type Progress struct {
	Window, Windows int   // windows done, windows to do
	TokensScored    int64 // predictions scored so far
	Perplexity      float64
	MeanKL          float64 // NaN without a reference
	Elapsed         time.Duration
}

// Result of a run. MeanKL, Top1Agreement and MaxKL are set only with a
// reference model.
type Result struct {
	Perplexity float64 `json:"perplexity"`
	// MeanNLL is the mean negative log-likelihood (nats) per scored token.
	MeanNLL float64 `json:"mean_nll"`
	// TokensScored = Windows * (SeqLen - 1 - ScoreFrom) predictions.
	TokensScored int64 `json:"tokens_scored"`
	// ScoreFrom: the first scored window position (Options.ScoreFrom).
	ScoreFrom int `json:"score_from,omitempty"`
	Windows   int `json:"windows"`
	// FirstWindow: the index of the first window evaluated
	// (Options.FirstWindow).
	FirstWindow int `json:"first_window,omitempty"`
	SeqLen      int `json:"seq_len"`
	// TextTokens is the number of tokens of the whole text; TokensUsed =
	// Windows * SeqLen of them were fed to the model (the rest is the
	// dropped tail, or windows left out by MaxWindows).
	TextTokens int   `json:"text_tokens"`
	TokensUsed int64 `json:"tokens_used"`
	// Seconds is the wall time of the run; TokensPerSecond = TokensUsed /
	// Seconds (model, reference and scoring together); ModelSeconds the time
	// spent in the candidate model's Logits alone.
	Seconds         float64 `json:"seconds"`
	TokensPerSecond float64 `json:"tokens_per_second"`
	ModelSeconds    float64 `json:"model_seconds"`
	// MeanKL is the mean over scored positions of KL(P_ref || P_model) in
	// nats; MaxKL the largest one; Top1Agreement the fraction of scored
	// positions where both models' most likely next token is the same.
	MeanKL        *float64 `json:"mean_kl,omitempty"`
	MaxKL         *float64 `json:"max_kl,omitempty"`
	Top1Agreement *float64 `json:"top1_agreement,omitempty"`
}

// NumWindows returns how many windows of seqLen tokens Run evaluates for
// nTokens tokens (nTokens / seqLen, capped by maxWindows when > 0).
func NumWindows(nTokens, seqLen, maxWindows int) int {
	if seqLen <= 0 {
		return 0
	}
	n := nTokens / seqLen
	if maxWindows > 0 && n > maxWindows {
		n = maxWindows
	}
	return n
}

// ErrNoWindow is returned when the text is shorter than one window.
var ErrNoWindow = errors.New("eval: text shorter than one window")

// Run evaluates lm on tokens (and compares it with ref, when not nil) under
// the GPTQ convention described in the package comment. A cancelled ctx
// stops the run after the current window; the Result then covers the
// windows done so far and the error is ctx.Err().
func Run(ctx context.Context, lm LM, ref LM, tokens []int32, opts Options) (Result, error) {
	seqLen := opts.SeqLen
	if seqLen == 0 {
		seqLen = DefaultSeqLen
	}
	if seqLen < 2 {
		return Result{}, fmt.Errorf("eval: sequence length %d: need at least 2 tokens per window", seqLen)
	}
	if opts.MaxWindows < 0 {
		return Result{}, fmt.Errorf("eval: max windows %d is negative", opts.MaxWindows)
	}
	if opts.FirstWindow < 0 {
		return Result{}, fmt.Errorf("eval: first window %d is negative", opts.FirstWindow)
	}
	if opts.ScoreFrom < 0 || opts.ScoreFrom >= seqLen-1 {
		return Result{}, fmt.Errorf("eval: score-from %d outside [0, %d)", opts.ScoreFrom, seqLen-1)
	}
	perWindow := int64(seqLen - 1 - opts.ScoreFrom) // predictions scored per window
	if lm == nil {
		return Result{}, errors.New("eval: no model")
	}
	vocab := lm.Vocab()
	if vocab <= 0 {
		return Result{}, fmt.Errorf("eval: model vocabulary size %d", vocab)
	}
	if ref != nil && ref.Vocab() != vocab {
		return Result{}, fmt.Errorf("eval: model vocabulary %d differs from the reference's %d", vocab, ref.Vocab())
	}
	total := NumWindows(len(tokens), seqLen, 0)
	if total == 0 {
		return Result{}, fmt.Errorf("%w: %d tokens, window %d", ErrNoWindow, len(tokens), seqLen)
	}
	if opts.FirstWindow >= total {
		return Result{}, fmt.Errorf("eval: first window %d, but the text has %d windows of %d tokens", opts.FirstWindow, total, seqLen)
	}
	windows := NumWindows(len(tokens)-opts.FirstWindow*seqLen, seqLen, opts.MaxWindows)
	used := tokens[opts.FirstWindow*seqLen : (opts.FirstWindow+windows)*seqLen]
	for i, t := range used {
		if t < 0 || int(t) >= vocab {
			return Result{}, fmt.Errorf("eval: token %d at position %d is outside the model's vocabulary (%d)", t, i, vocab)
		}
	}

	res := Result{SeqLen: seqLen, TextTokens: len(tokens), ScoreFrom: opts.ScoreFrom, FirstWindow: opts.FirstWindow}
	start := time.Now()
	var modelTime time.Duration
	var nllWindowSum float64 // sum_w nll_w * seqLen, as GPTQ accumulates it
	var nllTokens float64    // sum of every scored token's NLL
	var klSum, klMax float64
	var top1 int64
	finish := func() {
		res.Seconds = time.Since(start).Seconds()
		res.ModelSeconds = modelTime.Seconds()
		res.TokensUsed = int64(res.Windows) * int64(seqLen)
		res.TokensScored = int64(res.Windows) * perWindow
		if res.Windows > 0 {
			res.Perplexity = math.Exp(nllWindowSum / float64(int64(res.Windows)*int64(seqLen)))
			res.MeanNLL = nllTokens / float64(res.TokensScored)
			if ref != nil {
				kl := klSum / float64(res.TokensScored)
				mx := klMax
				agree := float64(top1) / float64(res.TokensScored)
				res.MeanKL, res.MaxKL, res.Top1Agreement = &kl, &mx, &agree
			}
		}
		if res.Seconds > 0 {
			res.TokensPerSecond = float64(res.TokensUsed) / res.Seconds
		}
	}

	var buf []float32 // the model's logits, reused when lm is a BufferedLM
	for w := 0; w < windows; w++ {
		if err := ctx.Err(); err != nil {
			finish()
			return res, err
		}
		win := used[w*seqLen : (w+1)*seqLen]
		t0 := time.Now()
		var logits []float32
		var err error
		if b, ok := lm.(BufferedLM); ok {
			logits, err = b.LogitsInto(ctx, win, buf)
			buf = logits
		} else {
			logits, err = lm.Logits(ctx, win)
		}
		modelTime += time.Since(t0)
		if err != nil {
			finish()
			return res, fmt.Errorf("eval: window %d: %w", opts.FirstWindow+w, err)
		}
		if len(logits) != seqLen*vocab {
			finish()
			return res, fmt.Errorf("eval: window %d: model returned %d logits, want %d x %d", opts.FirstWindow+w, len(logits), seqLen, vocab)
		}
		var refLogits []float32
		var refStats []RowStats
		if ref != nil {
			sref, withStats := ref.(StatsLM)
			if withStats {
				refLogits, refStats, err = sref.LogitsStats(ctx, win)
			} else {
				refLogits, err = ref.Logits(ctx, win)
			}
			if err != nil {
				finish()
				return res, fmt.Errorf("eval: window %d: reference: %w", opts.FirstWindow+w, err)
			}
			if len(refLogits) != seqLen*vocab {
				finish()
				return res, fmt.Errorf("eval: window %d: reference returned %d logits, want %d x %d", opts.FirstWindow+w, len(refLogits), seqLen, vocab)
			}
			if withStats && len(refStats) != seqLen {
				finish()
				return res, fmt.Errorf("eval: window %d: reference returned %d row stats for a window of %d", opts.FirstWindow+w, len(refStats), seqLen)
			}
		}
		sc, err := scoreWindow(logits, refLogits, refStats, win, vocab, opts.ScoreFrom, scoreWorkers(opts.Workers))
		if err != nil {
			finish()
			return res, fmt.Errorf("eval: window %d %w", opts.FirstWindow+w, err)
		}
		// Summed in position order, as one loop would: the result does not
		// depend on the number of workers.
		var winNLL float64
		for k, nll := range sc.nll {
			winNLL += nll
			if ref != nil {
				klSum += sc.kl[k]
				klMax = math.Max(klMax, sc.kl[k])
				if sc.agree[k] {
					top1++
				}
			}
		}
		nllTokens += winNLL
		// GPTQ: loss = mean over the window's seqLen-1 predictions, times seqLen.
		nllWindowSum += winNLL / float64(perWindow) * float64(seqLen)
		res.Windows++
		if opts.Progress != nil {
			scored := int64(res.Windows) * perWindow
			p := Progress{
				Window: res.Windows, Windows: windows, TokensScored: scored,
				Perplexity: math.Exp(nllWindowSum / float64(int64(res.Windows)*int64(seqLen))),
				MeanKL:     math.NaN(), Elapsed: time.Since(start),
			}
			if ref != nil {
				p.MeanKL = klSum / float64(scored)
			}
			opts.Progress(p)
		}
	}
	finish()
	return res, nil
}

// scores holds the per-position values of one window, in position order.
type scores struct {
	nll, kl []float64
	agree   []bool
}

// scoreWorkers returns the goroutines that score a window (n <= 0:
// GOMAXPROCS).
func scoreWorkers(n int) int {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return n
}

// scoreWindow computes the NLL of every scored position of a window (and,
// with refLogits, its KL to the reference and whether both argmaxes agree)
// on workers goroutines; refStats, when not nil, are the reference rows'
// RowStats (Stats of refLogits), which it would otherwise compute.
func scoreWindow(logits, refLogits []float32, refStats []RowStats, win []int32, vocab, from, workers int) (scores, error) {
	n := len(win) - 1 - from
	sc := scores{nll: make([]float64, n)}
	if refLogits != nil {
		sc.kl, sc.agree = make([]float64, n), make([]bool, n)
	}
	err := parallelRows(n, workers, func(k int) error {
		i := from + k
		row := logits[i*vocab : (i+1)*vocab]
		q, err := rowStats(row)
		if err != nil {
			return fmt.Errorf("position %d: %w", i, err)
		}
		sc.nll[k] = q.nll(row, win[i+1])
		if refLogits == nil {
			return nil
		}
		rrow := refLogits[i*vocab : (i+1)*vocab]
		var p RowStats
		if refStats != nil {
			p = refStats[i]
		} else if p, err = rowStats(rrow); err != nil {
			return fmt.Errorf("position %d: reference: %w", i, err)
		}
		sc.kl[k] = klFrom(rrow, row, p.M, p.L, q.M, q.L)
		sc.agree[k] = p.Argmax == q.Argmax
		return nil
	})
	if err != nil {
		return scores{}, err
	}
	return sc, nil
}

// parallelRows calls f(k) for k in [0, n) on workers goroutines, in batches
// of 16 consecutive rows, and returns the error of the lowest k that failed.
func parallelRows(n, workers int, f func(k int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	const batch = 16
	for range min(workers, (n+batch-1)/batch) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				s := int(next.Add(batch)) - batch
				if s >= n {
					return
				}
				for k := s; k < min(s+batch, n); k++ {
					errs[k] = f(k)
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// rowStats returns the row's RowStats, in float64 (keeping M apart from L
// preserves the precision of small NLLs). NaN and +Inf logits are errors;
// -Inf is a probability of zero, allowed unless all are.
func rowStats(row []float32) (RowStats, error) {
	if len(row) == 0 {
		return RowStats{}, errors.New("empty logits row")
	}
	m := math.Inf(-1)
	arg := -1
	for j, z := range row {
		x := float64(z)
		if math.IsNaN(x) || math.IsInf(x, 1) {
			return RowStats{}, fmt.Errorf("logit %d is %v", j, x)
		}
		if x > m {
			m, arg = x, j
		}
	}
	if arg < 0 {
		return RowStats{}, errors.New("every logit is -Inf")
	}
	var s float64
	for j, z := range row {
		if j != arg {
			s += math.Exp(float64(z) - m)
		}
	}
	return RowStats{M: m, L: math.Log1p(s), Argmax: int32(arg)}, nil
}

// nll is -log softmax(row)[target] for the row st describes (target in range).
func (st RowStats) nll(row []float32, target int32) float64 {
	return (st.M - float64(row[target])) + st.L
}

// NLL returns -log softmax(row)[target] in float64.
func NLL(row []float32, target int32) (float64, error) {
	if target < 0 || int(target) >= len(row) {
		return 0, fmt.Errorf("target %d outside a row of %d logits", target, len(row))
	}
	st, err := rowStats(row)
	if err != nil {
		return 0, err
	}
	return st.nll(row, target), nil
}

// KL returns KL(P || Q) = sum_j p_j (log p_j - log q_j) in nats, where P =
// softmax(ref) and Q = softmax(cand), computed in float64. It is +Inf when Q
// gives zero probability to a token P does not.
func KL(ref, cand []float32) (float64, error) {
	if len(ref) != len(cand) {
		return 0, fmt.Errorf("KL of rows of %d and %d logits", len(ref), len(cand))
	}
	p, err := rowStats(ref)
	if err != nil {
		return 0, fmt.Errorf("reference: %w", err)
	}
	q, err := rowStats(cand)
	if err != nil {
		return 0, err
	}
	return klFrom(ref, cand, p.M, p.L, q.M, q.L), nil
}

// klFrom is KL with the rows' log-sum-exps (RowStats M, L) already known.
func klFrom(ref, cand []float32, mp, lp, mq, lq float64) float64 {
	var kl float64
	for j := range ref {
		logp := (float64(ref[j]) - mp) - lp
		if math.IsInf(logp, -1) {
			continue // p_j = 0 contributes nothing
		}
		logq := (float64(cand[j]) - mq) - lq
		kl += math.Exp(logp) * (logp - logq)
	}
	return kl
}
