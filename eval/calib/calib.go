//go:build cgo

package calib

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nwc-project/nwc/eval"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/bert"
	"github.com/nwc-project/nwc/plugin/llama"
)

// Errors, wrapped with context; test with errors.Is.
var (
	// ErrCorrupt: a cache entry is damaged or inconsistent.
	ErrCorrupt = errors.New("calib: corrupt cache entry")
	// ErrText: the calibration text is too short for the tokens asked for.
	ErrText = errors.New("calib: calibration text too short")
)

// Encoder tokenizes text without special tokens (*tokenizer.Tokenizer).
type Encoder interface {
	Encode(text string) ([]int32, error)
}

// Options configure Collect. The zero value means the defaults.
type Options struct {
	// Tokens is the number of calibration tokens (default DefaultTokens);
	// it is rounded up to a whole number of windows.
	Tokens int
	// SeqLen is the window length (default DefaultSeqLen; at most Tokens).
	SeqLen int
	// Batch is the number of windows per ONNX Runtime run (default 1).
	Batch int
	// SinkWeight is how many times the first token of every window counts
	// in H: 0 means DefaultSinkWeight, 1 the plain XᵀX; at most
	// MaxSinkWeight.
	SinkWeight float64
	// Provider ("cpu" default, "cuda") and Threads (ONNX Runtime intra-op
	// threads, <= 0: its default) of the calibration session.
	Provider string
	Threads  int
	// Text is the calibration text and TextName its name; Text "" means
	// eval.CalibrationText().
	Text, TextName string
	// CacheDir is the root of the cache (default DefaultCacheDir()); NoCache
	// neither reads nor writes it.
	CacheDir string
	NoCache  bool
	// Progress is called after every run with the tokens done and the
	// total (nil: none).
	Progress func(done, total int)
	// Logf receives notes (nil: log.Printf).
	Logf func(format string, args ...any)
}

// Input is the H of one distinct linear input.
type Input struct {
	// Name is "blk.<layer>.<kind>" (llama.Kind* kinds), whatever the
	// checkpoint naming.
	Name  string `json:"name"`
	Layer int    `json:"layer"`
	Kind  string `json:"kind"`
	N     int    `json:"n"`
	// Weights are the checkpoint names of the linear weights reading it.
	Weights []string `json:"weights"`
	// Tokens is the number of tokens summed into H.
	Tokens int64 `json:"tokens"`
	// H is N x N, row-major, symmetric: Σ_t x_t x_tᵀ, plus (SinkWeight-1)
	// Sink once the weight is applied (Hessians.SinkWeight > 0).
	H []float64 `json:"-"`
	// Sink is N x N: Σ over windows of x_0 x_0ᵀ, the first token's
	// activations (nil when not collected, and once applied to H).
	Sink []float64 `json:"-"`
}

// Diag returns a copy of diag(H): the sum of squares of each input column's
// activations (the importance of the column).
func (in *Input) Diag() []float64 {
	d := make([]float64, in.N)
	for i := range d {
		d[i] = in.H[i*in.N+i]
	}
	return d
}

// Hessians are the calibration statistics of one model.
type Hessians struct {
	// ModelKey identifies the model's content (ModelKey).
	ModelKey string `json:"model_key"`
	// TextName and TextSHA256 identify the calibration text.
	TextName   string `json:"text_name"`
	TextSHA256 string `json:"text_sha256"`
	// TextBytes is the text's length; Windows windows of SeqLen tokens,
	// Tokens in all, were cut from it at the byte offsets WindowStarts.
	TextBytes    int   `json:"text_bytes"`
	Tokens       int64 `json:"tokens"`
	SeqLen       int   `json:"seq_len"`
	Windows      int   `json:"windows"`
	WindowStarts []int `json:"window_starts"`
	// SinkWindows is the number of first tokens summed into every
	// Input.Sink (0: no sink statistics); SinkWeight the weight applied to
	// them in H (0: not applied yet, as stored in the cache).
	SinkWindows int     `json:"sink_windows"`
	SinkWeight  float64 `json:"sink_weight"`
	// Seconds is the collection time, Provider/Threads/Attention how it ran.
	Seconds   float64 `json:"seconds"`
	Provider  string  `json:"provider"`
	Threads   int     `json:"threads"`
	Attention string  `json:"attention"`
	// Inputs in layer order, 4 per layer.
	Inputs []*Input `json:"inputs"`
	// Path is the cache directory the statistics were loaded from or saved
	// to ("" when not cached); Cached tells whether they were loaded.
	Path   string `json:"-"`
	Cached bool   `json:"-"`

	byWeight map[string]*Input
}

func (h *Hessians) index() {
	h.byWeight = map[string]*Input{}
	for _, in := range h.Inputs {
		for _, w := range in.Weights {
			h.byWeight[w] = in
		}
	}
}

// For returns the input read by the named linear weight (checkpoint name,
// e.g. "blk.3.attn_k.weight"); q/k/v share one, gate/up another.
func (h *Hessians) For(weight string) (*Input, bool) {
	if h == nil {
		return nil, false
	}
	if h.byWeight == nil {
		h.index()
	}
	in, ok := h.byWeight[weight]
	return in, ok
}

// HOrIdentity returns the H of the weight (n input columns) and true, or
// Identity(n) and false when h is nil or does not cover the weight (print
// NoCalibrationNote then). It fails when the sizes disagree.
func (h *Hessians) HOrIdentity(weight string, n int) ([]float64, bool, error) {
	in, ok := h.For(weight)
	if !ok {
		return Identity(n), false, nil
	}
	if in.N != n {
		return nil, false, fmt.Errorf("calib: %s has %d input columns, its H is %d x %d", weight, n, in.N, in.N)
	}
	return in.H, true, nil
}

// DefaultCacheDir is $NWC_CACHE/calib.
func DefaultCacheDir() string { return filepath.Join(refmodel.CacheDir(), "calib") }

// CachePath is the cache directory of one collection:
// <root>/<model-key[:16]>/<text-sha256[:12]>-<tokens>-<seqlen>.
func CachePath(root, modelKey, textSHA256 string, tokens, seqLen int) string {
	return filepath.Join(root, modelKey[:min(16, len(modelKey))], fmt.Sprintf("%s-%d-%d", textSHA256[:min(12, len(textSHA256))], tokens, seqLen))
}

// modelKeyVersion is part of ModelKey.
const modelKeyVersion = "nwc-calib-model-v1"

// ModelKey identifies a model by content: the sha256 (hex) of the tensor
// index (names, dtypes, shapes), every tensor's stored bytes and every asset
// (metadata, tokenizer). Re-encoding the same weights in another format or
// quantization gives another key; renaming the file does not. About 0.1 s
// for smollm2-135m (98 MB).
func ModelKey(src tensor.Source) (string, error) {
	h := sha256.New()
	h.Write([]byte(modelKeyVersion + "\n"))
	infos := src.Tensors()
	writeInt(h, int64(len(infos)))
	var buf []byte
	for _, ti := range infos {
		writeStr(h, ti.Name)
		writeStr(h, ti.DType.String())
		writeInt(h, int64(len(ti.Shape)))
		for _, d := range ti.Shape {
			writeInt(h, d)
		}
		var err error
		buf, err = src.ReadRaw(ti.Name, buf)
		if err != nil {
			return "", fmt.Errorf("calib: model key: %w", err)
		}
		writeInt(h, int64(len(buf)))
		h.Write(buf)
	}
	assets := slices.Clone(src.Assets())
	slices.SortStableFunc(assets, func(a, b tensor.Asset) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	writeInt(h, int64(len(assets)))
	for _, a := range assets {
		writeStr(h, a.Name)
		writeInt(h, int64(len(a.Data)))
		h.Write(a.Data)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func writeInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

func writeStr(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}

// resolved fills the defaults of o.
func (o Options) resolved() (Options, error) {
	if o.Tokens == 0 {
		o.Tokens = DefaultTokens
	}
	if o.SeqLen == 0 {
		o.SeqLen = min(DefaultSeqLen, o.Tokens)
	}
	if o.Batch == 0 {
		o.Batch = 1
	}
	if o.SinkWeight == 0 {
		o.SinkWeight = DefaultSinkWeight
	}
	if !(o.SinkWeight >= 1 && o.SinkWeight <= MaxSinkWeight) {
		return o, fmt.Errorf("calib: sink weight %g outside [1, %d]", o.SinkWeight, MaxSinkWeight)
	}
	if o.Tokens < 1 || o.SeqLen < 1 || o.Batch < 1 {
		return o, fmt.Errorf("calib: tokens %d, seq len %d, batch %d must be positive", o.Tokens, o.SeqLen, o.Batch)
	}
	if o.SeqLen > o.Tokens {
		return o, fmt.Errorf("calib: seq len %d is more than the %d tokens asked for", o.SeqLen, o.Tokens)
	}
	o.Tokens = (o.Tokens + o.SeqLen - 1) / o.SeqLen * o.SeqLen
	if o.CacheDir == "" {
		o.CacheDir = DefaultCacheDir()
	}
	if o.Logf == nil {
		o.Logf = log.Printf
	}
	if o.Text == "" {
		t, err := eval.CalibrationText()
		if err != nil {
			return o, err
		}
		o.Text, o.TextName = t.Joined, t.Name
	}
	if o.TextName == "" {
		o.TextName = "text"
	}
	return o, nil
}

// windowTokens cuts n windows of seqLen tokens out of text: window i is
// the first seqLen tokens of the text from the first line start at or
// after byte i*len(text)/n (byte 0 for the first), tokenized on its own
// (tokenizers restart at line starts, so this is what tokenizing the whole
// text would give there). Only as much text as the window needs is
// tokenized, and never beyond the next window's start, so the windows are
// disjoint; a window that runs out of text is an ErrText.
func windowTokens(text string, n, seqLen int, tok Encoder) ([][]int32, []int, error) {
	starts := make([]int, n+1)
	for i := 1; i < n; i++ {
		off := int(int64(i) * int64(len(text)) / int64(n))
		if off <= starts[i-1] {
			return nil, nil, fmt.Errorf("%w: %d bytes for %d windows", ErrText, len(text), n)
		}
		nl := strings.IndexByte(text[off-1:], '\n')
		if nl < 0 {
			return nil, nil, fmt.Errorf("%w: no line start after byte %d for window %d of %d", ErrText, off, i, n)
		}
		starts[i] = off + nl
	}
	starts[n] = len(text)
	wins := make([][]int32, n)
	for i := 0; i < n; i++ {
		lo, hi := starts[i], starts[i+1]
		if hi <= lo {
			return nil, nil, fmt.Errorf("%w: window %d of %d is empty", ErrText, i, n)
		}
		for size := 8 * seqLen; ; size *= 2 {
			end := min(lo+size, hi)
			if end < hi { // end the chunk at a line end (never mid-character)
				if nl := strings.IndexByte(text[end:hi], '\n'); nl >= 0 {
					end += nl
				} else {
					end = hi
				}
			}
			ids, err := tok.Encode(text[lo:end])
			if err != nil {
				return nil, nil, fmt.Errorf("calib: tokenize window %d: %w", i, err)
			}
			if len(ids) >= seqLen {
				wins[i] = ids[:seqLen]
				break
			}
			if end == hi {
				return nil, nil, fmt.Errorf("%w: window %d of %d (bytes %d..%d) has %d tokens, want %d: ask for fewer tokens", ErrText, i, n, lo, hi, len(ids), seqLen)
			}
		}
	}
	return wins, starts[:n], nil
}

// Collect returns the H of every block linear of src from the cache when it
// holds them for this model, text, token count and window length, else
// collects them by running the model on the text tokenized by tok, and
// caches them. A damaged cache entry is reported through Logf and replaced.
//
// A BERT encoder (plugin/bert) is calibrated with its own tokenizer, in
// windows of its max_seq_length, without sink weighting (forBERT).
func Collect(ctx context.Context, src tensor.Source, tok Encoder, opts Options) (*Hessians, error) {
	if bert.IsBERT(src) {
		btok, bo, closeTok, err := forBERT(src, opts)
		if err != nil {
			return nil, err
		}
		defer closeTok()
		tok, opts = btok, bo
	}
	o, err := opts.resolved()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(o.Text))
	textSHA := hex.EncodeToString(sum[:])
	key, err := ModelKey(src)
	if err != nil {
		return nil, err
	}
	dir := CachePath(o.CacheDir, key, textSHA, o.Tokens, o.SeqLen)
	var h *Hessians
	if !o.NoCache {
		c, err := Load(dir)
		switch {
		case err == nil && c.ModelKey == key && c.TextSHA256 == textSHA && c.Tokens == int64(o.Tokens) && c.SeqLen == o.SeqLen:
			c.Cached = true
			h = c
		case err == nil:
			o.Logf("calib: cache entry %s is for another model or setting; collecting again", dir)
		case errors.Is(err, os.ErrNotExist):
		default:
			o.Logf("calib: %v; collecting again", err)
		}
	}
	save := false
	switch {
	case h == nil:
		if h, err = collect(ctx, src, tok, o); err != nil {
			return nil, err
		}
		h.ModelKey, h.TextName, h.TextSHA256 = key, o.TextName, textSHA
		save = true
	case h.SinkWindows == 0 && o.SinkWeight != 1:
		// An entry from before the sink statistics: add them (seconds).
		if err := collectSink(ctx, src, tok, o, h); err != nil {
			return nil, err
		}
		save = true
	}
	if save && !o.NoCache {
		if err := h.Save(dir); err != nil {
			o.Logf("calib: could not cache H: %v", err)
		} else {
			h.Path = dir
		}
	}
	if err := h.ApplySinkWeight(o.SinkWeight); err != nil {
		return nil, err
	}
	return h, nil
}

// ApplySinkWeight sets every H to Σ_t x_t x_tᵀ + (w-1) Sink and drops Sink
// (once: a second call fails, and so does Save afterwards). With w = 1, or
// without sink statistics (SinkWindows 0, allowed only for w = 1), H is
// unchanged.
func (h *Hessians) ApplySinkWeight(w float64) error {
	if h.SinkWeight != 0 {
		return fmt.Errorf("calib: sink weight %g already applied", h.SinkWeight)
	}
	if !(w >= 1 && w <= MaxSinkWeight) {
		return fmt.Errorf("calib: sink weight %g outside [1, %d]", w, MaxSinkWeight)
	}
	if w != 1 && h.SinkWindows == 0 {
		return fmt.Errorf("calib: sink weight %g asked for, but no sink statistics were collected", w)
	}
	for _, in := range h.Inputs {
		if w != 1 {
			if len(in.Sink) != len(in.H) {
				return fmt.Errorf("calib: %s: sink has %d values, H %d", in.Name, len(in.Sink), len(in.H))
			}
			for i, s := range in.Sink {
				in.H[i] += (w - 1) * s
			}
		}
		in.Sink = nil
	}
	h.SinkWeight = w
	return nil
}

// collect runs the calibration graph over the windows.
func collect(ctx context.Context, src tensor.Source, tok Encoder, o Options) (*Hessians, error) {
	t0 := time.Now()
	nw := o.Tokens / o.SeqLen
	wins, starts, err := windowTokens(o.Text, nw, o.SeqLen, tok)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.TextName, err)
	}
	cal, err := openCalibrator(src, o)
	if err != nil {
		return nil, err
	}
	defer cal.Close()
	h := &Hessians{TextBytes: len(o.Text), WindowStarts: starts, SeqLen: o.SeqLen, Windows: nw, Provider: cal.Provider(), Threads: o.Threads}
	h.Attention = cal.attention()
	h.Inputs = cal.inputs()
	add := func(i int, m []float32) {
		acc := h.Inputs[i].H
		for j, v := range m {
			acc[j] += float64(v)
		}
	}
	for b := 0; b < nw; b += o.Batch {
		e := min(b+o.Batch, nw)
		if err := cal.run(ctx, wins[b:e], add); err != nil {
			return nil, err
		}
		h.Tokens += int64((e - b) * o.SeqLen)
		if o.Progress != nil {
			o.Progress(int(h.Tokens), o.Tokens)
		}
	}
	for _, in := range h.Inputs {
		in.Tokens = h.Tokens
		if err := finish(in.H, in.N); err != nil {
			return nil, fmt.Errorf("calib: %s: %w", in.Name, err)
		}
	}
	if lc, ok := cal.(llamaCalibrator); ok { // a decoder's sink statistics (forBERT)
		if err := runSink(ctx, lc.Calibrator, wins, h); err != nil {
			return nil, err
		}
	}
	h.Seconds = time.Since(t0).Seconds()
	h.index()
	return h, nil
}

// collectSink adds the sink statistics to h (collected before they
// existed): the same windows, first tokens only.
func collectSink(ctx context.Context, src tensor.Source, tok Encoder, o Options, h *Hessians) error {
	wins, starts, err := windowTokens(o.Text, h.Windows, h.SeqLen, tok)
	if err != nil {
		return fmt.Errorf("%s: %w", o.TextName, err)
	}
	if !slices.Equal(starts, h.WindowStarts) {
		return fmt.Errorf("%w: %s: window starts differ from the text's", ErrCorrupt, h.Path)
	}
	cal, err := llama.OpenCalibrator(src, llama.CalibrationOptions{Provider: o.Provider, Threads: o.Threads, Logf: o.Logf})
	if err != nil {
		return err
	}
	defer cal.Close()
	if len(cal.Inputs()) != len(h.Inputs) {
		return fmt.Errorf("%w: %s: %d inputs, the model has %d", ErrCorrupt, h.Path, len(h.Inputs), len(cal.Inputs()))
	}
	return runSink(ctx, cal, wins, h)
}

// runSink sets every Input.Sink to Σ over windows of x_0 x_0ᵀ by running
// the windows' first tokens alone (one batch of one-token sequences).
func runSink(ctx context.Context, cal *llama.Calibrator, wins [][]int32, h *Hessians) error {
	firsts := make([][]int32, len(wins))
	for i, w := range wins {
		firsts[i] = w[:1]
	}
	for _, in := range h.Inputs {
		in.Sink = make([]float64, in.N*in.N)
	}
	add := func(i int, m []float32) {
		acc := h.Inputs[i].Sink
		for j, v := range m {
			acc[j] += float64(v)
		}
	}
	for b := 0; b < len(firsts); b += 64 {
		if err := cal.Run(ctx, firsts[b:min(b+64, len(firsts))], add, nil); err != nil {
			return fmt.Errorf("calib: sink tokens: %w", err)
		}
	}
	for _, in := range h.Inputs {
		if err := finish(in.Sink, in.N); err != nil {
			return fmt.Errorf("calib: %s sink: %w", in.Name, err)
		}
	}
	h.SinkWindows = len(wins)
	return nil
}

// finish symmetrizes H and rounds it to float32 precision (what the cache
// stores), checking that it is finite.
func finish(H []float64, n int) error {
	for i := 0; i < n; i++ {
		for j := i; j < n; j++ {
			v := float64(float32((H[i*n+j] + H[j*n+i]) / 2))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("H[%d][%d] = %v is not finite", i, j, v)
			}
			H[i*n+j], H[j*n+i] = v, v
		}
	}
	return nil
}
