//go:build cgo

package bert

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/loader/tokjson"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// CalibrationInput describes one linear input of the calibration graph
// (the fields of plugin/llama's CalibrationInput).
type CalibrationInput struct {
	// Name is "blk.<layer>.<kind>" (Kind* constants).
	Name  string
	Layer int
	Kind  string
	// N is the input width: H is N x N.
	N int
	// Weights are the checkpoint names of the weights reading this input.
	Weights []string
	// Output is the graph output holding H = XᵀX, float32 [N, N], summed
	// over all batch*seq tokens of the run.
	Output string
}

// CalibrationOptions configure OpenCalibrator.
type CalibrationOptions struct {
	Provider string
	Threads  int
	Logf     func(format string, args ...any)
}

// BuildCalibration builds Build's graph with one more output per distinct
// linear input of every block (4 per layer: Kind* constants): H = XᵀX in
// float32 over the batch*seq tokens of the run. X is the very value the
// linear's MatMul reads, so calibration sees what inference computes.
func BuildCalibration(cfg Config, src tensor.Source) ([]byte, []CalibrationInput, error) {
	b, err := build(cfg, src, "bert-calibration")
	if err != nil {
		return nil, nil, err
	}
	g := b.g
	var inputs []CalibrationInput
	for _, li := range b.inputs {
		x := g.Op("Reshape", li.value, g.ConstInt64(-1, int64(li.n)))
		out := fmt.Sprintf("H.%d.%s", li.layer, li.kind)
		g.NodeOut("Gemm", []string{x, x}, []string{out}, onnx.AttrInt("transA", 1))
		g.Output(out, onnx.Float, onnx.D(int64(li.n)), onnx.D(int64(li.n)))
		inputs = append(inputs, CalibrationInput{Name: fmt.Sprintf("blk.%d.%s", li.layer, li.kind), Layer: li.layer, Kind: li.kind,
			N: li.n, Weights: li.weights, Output: out})
	}
	data, err := g.Marshal()
	if err != nil {
		return nil, nil, err
	}
	return data, inputs, nil
}

// Calibrator runs the calibration graph of a BERT encoder in one ONNX
// Runtime session. Run may be called from one goroutine at a time.
type Calibrator struct {
	cfg      Config
	provider string
	inputs   []CalibrationInput
	cls, sep int32

	mu   sync.Mutex
	sess *ort.DynamicAdvancedSession
}

// OpenCalibrator builds the calibration graph of src and opens a session
// for it. The caller still owns src.
func OpenCalibrator(src tensor.Source, opts CalibrationOptions) (*Calibrator, error) {
	cfg, err := ConfigFromSource(src)
	if err != nil {
		return nil, err
	}
	tj, _, err := tokjson.JSONForSource(src)
	if err != nil {
		return nil, err
	}
	_, cls, sep, err := PrepareTokenizerJSON(tj)
	if err != nil {
		return nil, err
	}
	so, used, _, err := sessionOptions(opts.Provider, opts.Threads, opts.Logf)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	data, inputs, err := BuildCalibration(cfg, src)
	debug.FreeOSMemory()
	if err != nil {
		return nil, err
	}
	outs := make([]string, len(inputs))
	for i, in := range inputs {
		outs[i] = in.Output
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{InputIDs, InputMask}, outs, so)
	data = nil
	debug.FreeOSMemory()
	if err != nil {
		return nil, fmt.Errorf("bert: onnx runtime calibration session: %w", err)
	}
	return &Calibrator{cfg: cfg, provider: used, inputs: inputs, cls: cls, sep: sep, sess: sess}, nil
}

// Config returns the model's hyper-parameters.
func (c *Calibrator) Config() Config { return c.cfg }

// Inputs returns the linear inputs, in layer order, 4 per layer.
func (c *Calibrator) Inputs() []CalibrationInput { return c.inputs }

// Provider returns the execution provider in use.
func (c *Calibrator) Provider() string { return c.provider }

// MaxContent is the most content tokens Run takes per sequence
// (Config.MaxSeqLen less [CLS] and [SEP]).
func (c *Calibrator) MaxContent() int { return c.cfg.MaxSeqLen - 2 }

// Run runs equally long sequences of content token ids (no special
// tokens, at most MaxContent each), each wrapped as [CLS] ids [SEP] with a
// full attention mask, and calls add(i, H) for every input i (Inputs
// order) with H = XᵀX over all tokens of the run ([CLS] and [SEP]
// included), float32 N x N row-major, valid only during the call.
func (c *Calibrator) Run(ctx context.Context, seqs [][]int32, add func(i int, h []float32)) error {
	if len(seqs) == 0 || len(seqs[0]) == 0 {
		return fmt.Errorf("bert: no tokens")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	B, S := len(seqs), len(seqs[0])+2
	if S-2 > c.MaxContent() {
		return fmt.Errorf("bert: calibration sequences of %d tokens, at most %d", S-2, c.MaxContent())
	}
	ids := make([]int64, 0, B*S)
	mask := make([]int64, B*S)
	for i := range mask {
		mask[i] = 1
	}
	for b, seq := range seqs {
		if len(seq) != S-2 {
			return fmt.Errorf("bert: sequence %d has %d tokens, sequence 0 has %d", b, len(seq), S-2)
		}
		ids = append(ids, int64(c.cls))
		for i, t := range seq {
			if t < 0 || int(t) >= c.cfg.Vocab {
				return fmt.Errorf("bert: token %d at position %d outside the vocabulary [0, %d)", t, i, c.cfg.Vocab)
			}
			ids = append(ids, int64(t))
		}
		ids = append(ids, int64(c.sep))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return ErrClosed
	}
	outs := make([]outBuf, len(c.inputs))
	for i, in := range c.inputs {
		outs[i] = outBuf{make([]float32, in.N*in.N), []int64{int64(in.N), int64(in.N)}}
	}
	if err := runSession(ctx, c.sess, B, S, ids, mask, outs); err != nil {
		return err
	}
	for i, o := range outs {
		add(i, o.data)
	}
	return nil
}

// Close releases the session.
func (c *Calibrator) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return nil
	}
	err := c.sess.Destroy()
	c.sess = nil
	return err
}
