//go:build cgo

package calib

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/llama"
)

// Sequential is GPTQ's calibration protocol, a loader.SequentialCalibration:
// blocks are coded in order, and the H of block b comes from the model
// whose blocks before b are already coded (decoded back: the weights a
// reader of the file gets); inside a block it is true-sequential: q/k/v
// from the attention-norm output, then o from the attention with the coded
// q/k/v, gate/up from the MLP input with the coded attention, down from
// the MLP activation with the coded gate/up. The block's output with every
// weight coded is the next block's input.
//
// The hidden states of every calibration window are kept between blocks
// (tokens x d float32, plus the attention context and post-attention
// residual of the current block), and each block runs as small graphs cut
// out of the runtime's own (llama.OpenBlockStage), so the model is never
// run again from the start. The first token of every window is run alone
// as well and weighted as in Collect (attention sink).
//
// The H depend on the codec, its settings and the sink weight: they are
// cached under a key that includes them (SequentialCachePath), so a re-run
// of the same compression needs no model run.
type Sequential struct {
	src tensor.Source
	ov  *overlay
	o   Options
	cfg arch.Config

	// Model, text and window identification (as in Hessians).
	modelKey, textSHA string
	wins, firsts      [][]int32
	starts            []int

	inputs []llama.CalibrationInput
	steps  [][]string
	stepOf map[string]int

	mu       sync.Mutex
	key      string // the coding setting (Start)
	dir, tmp string // cache entry and the temporary folder being written
	cached   *Hessians
	states   []*llama.BlockState // one per batch of windows
	sink     *llama.BlockState   // the windows' first tokens alone
	advanced int                 // blocks whose output is in states
	cur      int                 // step whose H is curH (-1: none)
	curH     []float64
	reported map[string]bool
	seconds  float64
}

// NewSequential prepares the sequential protocol for src: the calibration
// windows (tokenized by tok) and the order of the block linears; nothing
// runs before Start. opts are Collect's.
func NewSequential(ctx context.Context, src tensor.Source, tok Encoder, opts Options) (*Sequential, error) {
	o, err := opts.resolved()
	if err != nil {
		return nil, err
	}
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		return nil, fmt.Errorf("sequential calibration (decoder models only): %w", err)
	}
	if err := llama.CheckBlockStages(cfg); err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(o.Text))
	s := &Sequential{src: src, ov: &overlay{Source: src, w: map[string][]float32{}}, o: o, cfg: cfg,
		textSHA: hex.EncodeToString(sum[:]), stepOf: map[string]int{}, cur: -1}
	if s.modelKey, err = ModelKey(src); err != nil {
		return nil, err
	}
	nw := o.Tokens / o.SeqLen
	if s.wins, s.starts, err = windowTokens(o.Text, nw, o.SeqLen, tok); err != nil {
		return nil, fmt.Errorf("%s: %w", o.TextName, err)
	}
	for _, w := range s.wins {
		s.firsts = append(s.firsts, w[:1])
	}
	s.inputs = llama.BlockInputs(cfg)
	for i, in := range s.inputs {
		s.steps = append(s.steps, in.Weights)
		for _, w := range in.Weights {
			s.stepOf[w] = i
		}
	}
	return s, ctx.Err()
}

// SequentialCachePath is the cache directory of one sequential collection:
// <root>/<model-key[:16]>/seq-<sha256(codec key, sink weight)[:12]>-<text-sha256[:12]>-<tokens>-<seqlen>.
func SequentialCachePath(root, modelKey, codecKey string, sinkWeight float64, textSHA256 string, tokens, seqLen int) string {
	k := sha256.Sum256([]byte(codecKey + "\nsink-weight=" + strconv.FormatFloat(sinkWeight, 'g', -1, 64)))
	return filepath.Join(root, modelKey[:min(16, len(modelKey))],
		fmt.Sprintf("seq-%s-%s-%d-%d", hex.EncodeToString(k[:6]), textSHA256[:min(12, len(textSHA256))], tokens, seqLen))
}

// seqMeta is the sequential.json of a cache entry: what the H depend on
// beyond meta.json (whose H are the sink-weighted sums, sink_windows 0).
type seqMeta struct {
	Protocol   string  `json:"protocol"`
	CodecKey   string  `json:"codec_key"`
	SinkWeight float64 `json:"sink_weight"`
	Seconds    float64 `json:"seconds"`
}

const seqMetaName = "sequential.json"

// Start begins a run for the coding setting key: from the cache when it
// holds this run (cached true), else by running the embedding on the
// calibration windows.
func (s *Sequential) Start(ctx context.Context, key string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.key = key
	s.dir = SequentialCachePath(s.o.CacheDir, s.modelKey, key, s.o.SinkWeight, s.textSHA, s.o.Tokens, s.o.SeqLen)
	if !s.o.NoCache {
		h, err := s.load(key)
		switch {
		case err == nil:
			h.Cached, s.cached = true, h
			return true, nil
		case !errors.Is(err, os.ErrNotExist):
			s.o.Logf("calib: %v; collecting again", err)
		}
		if err := os.MkdirAll(filepath.Dir(s.dir), 0o755); err != nil {
			return false, fmt.Errorf("calib: %w", err)
		}
		if s.tmp, err = os.MkdirTemp(filepath.Dir(s.dir), filepath.Base(s.dir)+".tmp-"+strconv.Itoa(os.Getpid())+"-"); err != nil {
			return false, fmt.Errorf("calib: %w", err)
		}
	}
	t0 := time.Now()
	nw := len(s.wins)
	for b := 0; b < nw; b += s.o.Batch {
		e := min(b+s.o.Batch, nw)
		s.states = append(s.states, &llama.BlockState{Batch: e - b, Seq: s.o.SeqLen})
	}
	s.sink = &llama.BlockState{Batch: nw, Seq: 1}
	err := s.run(ctx, 0, llama.StageEmbed, nil, nil)
	s.seconds += time.Since(t0).Seconds()
	return false, err
}

// load reads the cache entry for key (os.ErrNotExist when there is none).
func (s *Sequential) load(key string) (*Hessians, error) {
	mj, err := os.ReadFile(filepath.Join(s.dir, seqMetaName))
	if err != nil {
		return nil, fmt.Errorf("calib: load: %w", err)
	}
	var sm seqMeta
	if err := json.Unmarshal(mj, &sm); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, filepath.Join(s.dir, seqMetaName), err)
	}
	if sm.Protocol != ProtocolSequential || sm.CodecKey != key || sm.SinkWeight != s.o.SinkWeight {
		return nil, fmt.Errorf("%w: %s is for %q, sink weight %g", ErrCorrupt, s.dir, sm.CodecKey, sm.SinkWeight)
	}
	h, err := Load(s.dir)
	if err != nil {
		return nil, err
	}
	if h.ModelKey != s.modelKey || h.TextSHA256 != s.textSHA || h.Tokens != int64(s.o.Tokens) || h.SeqLen != s.o.SeqLen || h.SinkWindows != 0 || len(h.Inputs) != len(s.inputs) {
		return nil, fmt.Errorf("%w: %s is for another model or setting", ErrCorrupt, s.dir)
	}
	s.seconds = sm.Seconds
	h.SinkWeight = sm.SinkWeight
	return h, nil
}

// Steps lists the block linears in coding order: per block q/k/v, o,
// gate/up, down.
func (s *Sequential) Steps() [][]string { return s.steps }

// Hessian returns the sink-weighted H of the named weight's input,
// computing it when the weight's step is the next one.
func (s *Sequential) Hessian(ctx context.Context, name string, n int) ([]float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	step, ok := s.stepOf[name]
	if !ok {
		return nil, fmt.Errorf("calib: sequential: %s is not a block linear of the model", name)
	}
	if in := s.inputs[step]; in.N != n {
		return nil, fmt.Errorf("calib: %s has %d input columns, its H is %d x %d", name, n, in.N, in.N)
	}
	if s.cached != nil {
		in, ok := s.cached.For(name)
		if !ok {
			return nil, fmt.Errorf("%w: %s has no H for %s", ErrCorrupt, s.dir, name)
		}
		return in.H, nil
	}
	if step == s.cur {
		return s.curH, nil
	}
	if step != s.cur+1 {
		return nil, fmt.Errorf("calib: sequential: H of %s asked for before step %d of %d", name, s.cur+1, len(s.steps))
	}
	if err := s.stepReported(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	H, err := s.collectStep(ctx, step)
	s.seconds += time.Since(t0).Seconds()
	if err != nil {
		return nil, err
	}
	s.cur, s.curH, s.reported = step, H, map[string]bool{}
	if s.o.Progress != nil {
		s.o.Progress(step+1, len(s.steps))
	}
	return H, nil
}

// stepReported checks that every weight of the current step was coded.
func (s *Sequential) stepReported() error {
	if s.cur < 0 {
		return nil
	}
	for _, w := range s.steps[s.cur] {
		if !s.reported[w] {
			return fmt.Errorf("calib: sequential: %s was not reported coded before the next step", w)
		}
	}
	return nil
}

// Coded records the decoded weights of a weight of the current step.
func (s *Sequential) Coded(ctx context.Context, name string, w []float32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cached != nil {
		return nil
	}
	step, ok := s.stepOf[name]
	if !ok || step != s.cur {
		return fmt.Errorf("calib: sequential: %s reported coded out of order", name)
	}
	ti, ok := tensor.Find(s.src.Tensors(), name)
	if !ok || int64(len(w)) != ti.NumElements() {
		return fmt.Errorf("calib: sequential: %s coded with %d values, the model's has shape %v", name, len(w), ti.Shape)
	}
	s.ov.set(name, w)
	s.reported[name] = true
	return ctx.Err()
}

// Finish saves the cache entry once every step is done.
func (s *Sequential) Finish() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states, s.sink, s.curH = nil, nil, nil
	s.ov.clear()
	if s.cached != nil || s.tmp == "" {
		return nil
	}
	defer os.RemoveAll(s.tmp)
	if s.cur != len(s.steps)-1 {
		return fmt.Errorf("calib: sequential: finished after %d of %d steps", s.cur+1, len(s.steps))
	}
	if err := s.stepReported(); err != nil {
		return err
	}
	h := s.hessians()
	h.SinkWeight = 0 // the weight is in sequential.json; H carries it already
	sm, err := json.MarshalIndent(seqMeta{Protocol: ProtocolSequential, CodecKey: s.key, SinkWeight: s.o.SinkWeight, Seconds: s.seconds}, "", "  ")
	if err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	if err := os.WriteFile(filepath.Join(s.tmp, seqMetaName), append(sm, '\n'), 0o644); err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	if err := writeMeta(s.tmp, h); err != nil {
		return err
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("calib: save: %w", err)
	}
	if err := os.Rename(s.tmp, s.dir); err != nil {
		if _, statErr := os.Stat(filepath.Join(s.dir, metaName)); statErr == nil {
			return nil // another process saved the same entry first
		}
		return fmt.Errorf("calib: save: %w", err)
	}
	return nil
}

// Info describes the run for reports: the Hessians without H (Cached tells
// whether they came from the cache, Path where they are).
func (s *Sequential) Info() *Hessians {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cached != nil {
		h := *s.cached
		h.Inputs = nil
		h.Seconds = s.seconds
		return &h
	}
	h := s.hessians()
	h.Inputs = nil
	return h
}

func (s *Sequential) hessians() *Hessians {
	h := &Hessians{ModelKey: s.modelKey, TextName: s.o.TextName, TextSHA256: s.textSHA, TextBytes: len(s.o.Text),
		Tokens: int64(s.o.Tokens), SeqLen: s.o.SeqLen, Windows: len(s.wins), WindowStarts: s.starts,
		Seconds: s.seconds, Provider: s.o.Provider, Threads: s.o.Threads, SinkWeight: s.o.SinkWeight, Path: s.dir}
	if h.Provider == "" {
		h.Provider = "cpu"
	}
	h.Attention = llama.DefaultAttention(s.cfg, h.Provider)
	for _, ci := range s.inputs {
		h.Inputs = append(h.Inputs, &Input{Name: ci.Name, Layer: ci.Layer, Kind: ci.Kind, N: ci.N, Weights: ci.Weights, Tokens: int64(s.o.Tokens)})
	}
	return h
}

// collectStep runs the stage of step (advancing the hidden states past the
// previous block first) and returns its sink-weighted H.
func (s *Sequential) collectStep(ctx context.Context, step int) ([]float64, error) {
	in := s.inputs[step]
	var stage llama.BlockStage
	switch in.Kind {
	case llama.KindAttnIn:
		stage = llama.StageAttnIn
	case llama.KindAttnOut:
		stage = llama.StageAttnOut
	case llama.KindFFNIn:
		stage = llama.StageFFNIn
	case llama.KindFFNDown:
		stage = llama.StageFFNDown
	default:
		return nil, fmt.Errorf("calib: sequential: unknown input kind %q", in.Kind)
	}
	for s.advanced < in.Layer {
		if err := s.run(ctx, s.advanced, llama.StageOutput, nil, nil); err != nil {
			return nil, err
		}
		s.ov.dropLayer(s.cfg, s.advanced)
		s.advanced++
	}
	H := make([]float64, in.N*in.N)
	sink := make([]float64, in.N*in.N)
	if err := s.run(ctx, in.Layer, stage, H, sink); err != nil {
		return nil, err
	}
	if err := finish(H, in.N); err != nil {
		return nil, fmt.Errorf("calib: %s: %w", in.Name, err)
	}
	if err := finish(sink, in.N); err != nil {
		return nil, fmt.Errorf("calib: %s sink: %w", in.Name, err)
	}
	// What Collect serves after ApplySinkWeight, rounded to float32 as the
	// cache stores it (a cached run gets the same numbers).
	for i, v := range sink {
		H[i] = float64(float32(H[i] + (s.o.SinkWeight-1)*v))
	}
	if s.tmp != "" {
		if err := os.WriteFile(filepath.Join(s.tmp, in.Name+".h"), encodeMatrix(H, in.N, int64(s.o.Tokens)), 0o644); err != nil {
			return nil, fmt.Errorf("calib: save: %w", err)
		}
	}
	return H, nil
}

// run runs one stage of block layer over every batch of windows and the
// sink tokens, adding H (and the sink H) into h and sink when given.
func (s *Sequential) run(ctx context.Context, layer int, stage llama.BlockStage, h, sink []float64) error {
	r, err := llama.OpenBlockStage(s.ov, layer, stage, llama.CalibrationOptions{Provider: s.o.Provider, Threads: s.o.Threads, Logf: s.o.Logf})
	if err != nil {
		return err
	}
	defer r.Close()
	add := func(acc []float64) func([]float32) {
		return func(m []float32) {
			for j, v := range m {
				acc[j] += float64(v)
			}
		}
	}
	w := 0
	for _, st := range s.states {
		var f func([]float32)
		if h != nil {
			f = add(h)
		}
		if err := r.Run(ctx, st, s.wins[w:w+st.Batch], f); err != nil {
			return err
		}
		w += st.Batch
	}
	var f func([]float32)
	if sink != nil {
		f = add(sink)
	}
	return r.Run(ctx, s.sink, s.firsts, f)
}

// overlay is a tensor.Source that hands out the coded weights set so far
// in place of the source's.
type overlay struct {
	tensor.Source
	mu sync.Mutex
	w  map[string][]float32
}

func (o *overlay) set(name string, w []float32) {
	o.mu.Lock()
	o.w[name] = w
	o.mu.Unlock()
}

func (o *overlay) clear() {
	o.mu.Lock()
	o.w = map[string][]float32{}
	o.mu.Unlock()
}

// dropLayer forgets the coded weights of a layer no stage reads any more.
func (o *overlay) dropLayer(cfg arch.Config, l int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, in := range llama.BlockInputs(cfg) {
		if in.Layer == l {
			for _, w := range in.Weights {
				delete(o.w, w)
			}
		}
	}
}

func (o *overlay) ReadFloat32(name string, dst []float32) ([]float32, error) {
	o.mu.Lock()
	w, ok := o.w[name]
	o.mu.Unlock()
	if ok {
		return append(dst[:0], w...), nil
	}
	return o.Source.ReadFloat32(name, dst)
}

var _ loader.SequentialCalibration = (*Sequential)(nil)
