//go:build cgo

package llama

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx"
	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// Kinds of linear inputs of a decoder block (the four distinct inputs of
// its seven linear layers).
const (
	KindAttnIn  = "attn_qkv"    // RMSNorm(x): input of attn_q, attn_k, attn_v
	KindAttnOut = "attn_output" // attention context before o_proj: input of attn_output
	KindFFNIn   = "ffn_gate_up" // RMSNorm(h): input of ffn_gate, ffn_up
	KindFFNDown = "ffn_down"    // act(gate)*up (SiLU, Gemma: tanh GELU): input of ffn_down
)

// calibKinds lists the kinds in graph order with the parts that read them
// (the first part's MatMul is where the input is found).
var calibKinds = []struct {
	kind  string
	parts []string
}{
	{KindAttnIn, []string{partQ, partK, partV}},
	{KindAttnOut, []string{partO}},
	{KindFFNIn, []string{partGate, partUp}},
	{KindFFNDown, []string{partDown}},
}

// CalibrationInput describes one linear input of the calibration graph.
type CalibrationInput struct {
	// Name identifies the input independently of the checkpoint's naming:
	// "blk.<layer>.<kind>".
	Name  string
	Layer int
	Kind  string // KindAttnIn, ...
	// N is the input width: the output H is N x N.
	N int
	// Weights are the checkpoint names of the linear weights that read
	// this input (in the source's own naming).
	Weights []string
	// Output is the graph output holding H = XᵀX, float32 [N, N], summed
	// over all batch*seq tokens of the run; Activation is the graph output
	// holding X itself, float32 [batch*seq, N] (only with
	// CalibrationOptions.Activations, else "").
	Output, Activation string
}

// CalibrationOptions tunes BuildCalibration and OpenCalibrator.
type CalibrationOptions struct {
	// Build: opset and attention implementation, as for Build (Attention ""
	// means DefaultAttention for the provider in OpenCalibrator, standard
	// operators in BuildCalibration).
	Build BuildOptions
	// Activations also emits every input X as a graph output (for tests;
	// costs memory and time).
	Activations bool
	// Provider ("cpu" default, or "cuda") and Threads (ONNX Runtime
	// intra-op threads, <= 0: its default) are used by OpenCalibrator.
	Provider string
	Threads  int
	// Logf receives notes such as a CUDA fallback (nil: log.Printf).
	Logf func(format string, args ...any)
}

// BuildCalibration builds the calibration graph of the decoder: Build's
// graph, minus the final norm and the output head, with one output per
// distinct linear input of every block (4 per layer: see the Kind
// constants), each H = XᵀX in float32 over the batch*seq tokens of the run,
// X being the input reshaped to [batch*seq, N]. It returns the serialised
// model and the inputs in layer order.
//
// The inputs are found in Build's graph, not rebuilt: X is the first input
// of the MatMul that multiplies by the weight "<name>.T" (Build's
// initializer naming), so the calibration graph computes exactly what the
// inference graph computes.
func BuildCalibration(cfg arch.Config, src tensor.Source, opts CalibrationOptions) ([]byte, []CalibrationInput, error) {
	bo := opts.Build
	if err := checkBuildOptions(cfg, bo); err != nil {
		return nil, nil, err
	}
	b := &builder{cfg: cfg, src: src, infos: src.Tensors(), n: names(cfg), gqa: bo.Attention == AttentionGQA}
	g := onnx.NewGraph("llama-calibration")
	if bo.Opset > 0 {
		g.Opset = bo.Opset
	}
	b.g = g
	if err := b.build(); err != nil {
		return nil, nil, err
	}
	b.buf = nil
	inputs, err := addCalibrationOutputs(g, cfg, b.n, opts.Activations)
	if err != nil {
		return nil, nil, err
	}
	data, err := g.Marshal()
	if err != nil {
		return nil, nil, err
	}
	return data, inputs, nil
}

// checkBuildOptions repeats Build's checks of cfg and opts.
func checkBuildOptions(cfg arch.Config, opts BuildOptions) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	switch opts.Attention {
	case "", AttentionStandard, AttentionGQA:
	default:
		return fmt.Errorf("llama: unknown attention implementation %q (want %q or %q)", opts.Attention, AttentionStandard, AttentionGQA)
	}
	if opts.Opset != 0 && (opts.Opset < 17 || opts.Opset > 23) {
		return fmt.Errorf("llama: opset %d not supported (17..23)", opts.Opset)
	}
	if opts.Attention == AttentionGQA && cfg.HeadDim%16 != 0 {
		return fmt.Errorf("llama: GroupQueryAttention with rotary needs head_dim %% 16 == 0, have %d (use %q attention)", cfg.HeadDim, AttentionStandard)
	}
	return nil
}

// addCalibrationOutputs replaces the logits output of a graph made by
// builder.build with the H (and optionally X) outputs, and prunes what no
// output needs any more (final norm, head, logits).
func addCalibrationOutputs(g *onnx.Graph, cfg arch.Config, n tensorNames, activations bool) ([]CalibrationInput, error) {
	gp := g.Proto()
	// The MatMul reading each linear weight, by weight initializer name.
	reader := map[string]string{} // "<weight>.T" -> X
	for _, nd := range gp.Node {
		if nd.GetOpType() == "MatMul" && len(nd.Input) == 2 {
			reader[nd.Input[1]] = nd.Input[0]
		}
	}
	var inputs []CalibrationInput
	flat := map[int]string{}
	for l := 0; l < cfg.Layers; l++ {
		for _, k := range calibKinds {
			in := CalibrationInput{Name: fmt.Sprintf("blk.%d.%s", l, k.kind), Layer: l, Kind: k.kind}
			var x string
			for _, part := range k.parts {
				w := n.layer(l, part)
				xi, ok := reader[w+".T"]
				if !ok {
					return nil, fmt.Errorf("llama: calibration graph: no MatMul reads %s", w)
				}
				if x != "" && xi != x {
					return nil, fmt.Errorf("llama: calibration graph: %s reads %s, not %s like %s", w, xi, x, in.Weights[0])
				}
				x = xi
				in.Weights = append(in.Weights, w)
			}
			switch k.kind {
			case KindAttnIn, KindFFNIn:
				in.N = cfg.Hidden
			case KindAttnOut:
				in.N = cfg.Heads * cfg.HeadDim
			case KindFFNDown:
				in.N = cfg.FFN
			}
			shape, ok := flat[in.N]
			if !ok {
				shape = g.ConstInt64(-1, int64(in.N))
				flat[in.N] = shape
			}
			x2 := g.Op("Reshape", x, shape) // [batch*seq, N]
			in.Output = "calib.h." + in.Name
			g.NodeOut("Gemm", []string{x2, x2}, []string{in.Output}, onnx.AttrInt("transA", 1))
			g.Output(in.Output, onnx.Float, onnx.D(int64(in.N)), onnx.D(int64(in.N)))
			if activations {
				in.Activation = "calib.x." + in.Name
				g.NodeOut("Identity", []string{x2}, []string{in.Activation})
				g.Output(in.Activation, onnx.Float, onnx.P("tokens"), onnx.D(int64(in.N)))
			}
			inputs = append(inputs, in)
		}
	}
	// Drop the logits output and everything only it needed.
	outs := gp.Output[:0]
	for _, o := range gp.Output {
		if o.GetName() != OutputName {
			outs = append(outs, o)
		}
	}
	gp.Output = outs
	pruneGraph(gp)
	return inputs, nil
}

// pruneGraph removes the nodes and initializers that no graph output
// depends on. gp's nodes are in topological order (as Graph adds them).
func pruneGraph(gp *onnxpb.GraphProto) {
	need := map[string]bool{}
	for _, o := range gp.Output {
		need[o.GetName()] = true
	}
	keep := make([]bool, len(gp.Node))
	for i := len(gp.Node) - 1; i >= 0; i-- {
		nd := gp.Node[i]
		for _, o := range nd.Output {
			if need[o] {
				keep[i] = true
				break
			}
		}
		if keep[i] {
			for _, in := range nd.Input {
				need[in] = true
			}
		}
	}
	nodes := gp.Node[:0]
	for i, nd := range gp.Node {
		if keep[i] {
			nodes = append(nodes, nd)
		}
	}
	clear(gp.Node[len(nodes):])
	gp.Node = nodes
	inits := gp.Initializer[:0]
	for _, t := range gp.Initializer {
		if need[t.GetName()] {
			inits = append(inits, t)
		}
	}
	clear(gp.Initializer[len(inits):])
	gp.Initializer = inits
}

// Calibrator runs the calibration graph of a model in one ONNX Runtime
// session. Run may be called from one goroutine at a time.
type Calibrator struct {
	cfg      arch.Config
	provider string
	note     string
	inputs   []CalibrationInput
	acts     bool

	mu   sync.Mutex
	sess *ort.DynamicAdvancedSession
	h    [][]float32 // output buffers, one per input
	hT   []*ort.Tensor[float32]
}

// OpenCalibrator builds the calibration graph of src (BuildCalibration) and
// opens a session for it. The caller still owns src.
func OpenCalibrator(src tensor.Source, opts CalibrationOptions) (*Calibrator, error) {
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		return nil, err
	}
	so, used, note, _, err := sessionOptions(opts.Provider, opts.Threads, opts.Logf)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if opts.Build.Attention == "" {
		opts.Build.Attention = DefaultAttention(cfg, used)
	}
	data, inputs, err := BuildCalibration(cfg, src, opts)
	debug.FreeOSMemory()
	if err != nil {
		return nil, err
	}
	outNames := make([]string, 0, 2*len(inputs))
	for _, in := range inputs {
		outNames = append(outNames, in.Output)
	}
	if opts.Activations {
		for _, in := range inputs {
			outNames = append(outNames, in.Activation)
		}
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, []string{InputIDs}, outNames, so)
	data = nil
	debug.FreeOSMemory()
	if err != nil {
		return nil, fmt.Errorf("llama: onnx runtime calibration session: %w", err)
	}
	c := &Calibrator{cfg: cfg, provider: used, note: note, inputs: inputs, acts: opts.Activations, sess: sess}
	for _, in := range inputs {
		buf := make([]float32, in.N*in.N)
		t, err := ort.NewTensor(ort.NewShape(int64(in.N), int64(in.N)), buf)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("llama: calibration output tensor: %w", err)
		}
		c.h = append(c.h, buf)
		c.hT = append(c.hT, t)
	}
	return c, nil
}

// Config returns the model's hyper-parameters.
func (c *Calibrator) Config() arch.Config { return c.cfg }

// Inputs returns the linear inputs, in layer order, 4 per layer.
func (c *Calibrator) Inputs() []CalibrationInput { return c.inputs }

// Provider returns the execution provider in use.
func (c *Calibrator) Provider() string { return c.provider }

// FallbackNote returns the note logged when the requested provider was
// unavailable ("" when none).
func (c *Calibrator) FallbackNote() string { return c.note }

// Run runs the graph on equally long token sequences (positions
// 0..len-1 each) and calls add(i, H) for every input i (Inputs order) with
// its H = XᵀX over all the tokens, float32 N x N row-major. H is only valid
// during the call (the buffer is reused). With Activations, x(i, X) is
// called as well with X [tokens, N] (x may be nil).
func (c *Calibrator) Run(ctx context.Context, seqs [][]int32, add func(i int, h []float32), x func(i int, x []float32)) error {
	if len(seqs) == 0 || len(seqs[0]) == 0 {
		return fmt.Errorf("llama: no tokens")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	B, S := len(seqs), len(seqs[0])
	ids := make([]int64, 0, B*S)
	for b, seq := range seqs {
		if len(seq) != S {
			return fmt.Errorf("llama: sequence %d has %d tokens, sequence 0 has %d", b, len(seq), S)
		}
		for i, t := range seq {
			if t < 0 || int(t) >= c.cfg.Vocab {
				return fmt.Errorf("llama: token %d at position %d outside the vocabulary [0, %d)", t, i, c.cfg.Vocab)
			}
			ids = append(ids, int64(t))
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return ErrClosed
	}
	in, err := ort.NewTensor(ort.NewShape(int64(B), int64(S)), ids)
	if err != nil {
		return fmt.Errorf("llama: input tensor: %w", err)
	}
	defer in.Destroy()
	outs := make([]ort.Value, 0, 2*len(c.inputs))
	for _, t := range c.hT {
		outs = append(outs, t)
	}
	var xs [][]float32
	if c.acts {
		for _, ci := range c.inputs {
			buf := make([]float32, B*S*ci.N)
			t, err := ort.NewTensor(ort.NewShape(int64(B*S), int64(ci.N)), buf)
			if err != nil {
				return fmt.Errorf("llama: activation tensor: %w", err)
			}
			defer t.Destroy()
			outs = append(outs, t)
			xs = append(xs, buf)
		}
	}
	if err := runCancellable(ctx, c.sess, []ort.Value{in}, outs, "calibration run"); err != nil {
		return err
	}
	for i, h := range c.h {
		add(i, h)
	}
	if x != nil {
		for i, v := range xs {
			x(i, v)
		}
	}
	return nil
}

// Close releases the session and the output buffers.
func (c *Calibrator) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range c.hT {
		t.Destroy()
	}
	c.hT, c.h = nil, nil
	if c.sess == nil {
		return nil
	}
	err := c.sess.Destroy()
	c.sess = nil
	return err
}
