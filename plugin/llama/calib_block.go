//go:build cgo

package llama

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"

	ort "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx"
	"github.com/nwc-project/nwc/plugin/onnx/onnxpb"
)

// Sequential (GPTQ-protocol) calibration runs one decoder block at a time,
// in stages, on hidden states kept by the caller: each stage is a small
// graph cut out of Build's one-layer graph, so it computes exactly what
// the inference graph computes, and each is built when it is needed, from
// the source as it is then (the caller's source hands out the weights
// already coded and decoded back).
//
//	StageEmbed    input_ids        -> X   (the residual stream entering block 0)
//	StageAttnIn   X                -> H of RMSNorm(X)           (q, k, v)
//	StageAttnOut  X                -> H of the attention context (o), Ctx
//	StageFFNIn    X, Ctx           -> H of RMSNorm(H2)          (gate, up), H2 = X + o(Ctx)
//	StageFFNDown  H2               -> H of SiLU(gate)·up        (down)
//	StageOutput   H2               -> X of the next block
type BlockStage int

// The stages of one block, in the order they run.
const (
	StageEmbed BlockStage = iota
	StageAttnIn
	StageAttnOut
	StageFFNIn
	StageFFNDown
	StageOutput
)

// Kind is the linear input whose H the stage computes ("" for StageEmbed
// and StageOutput).
func (s BlockStage) Kind() string {
	switch s {
	case StageAttnIn:
		return KindAttnIn
	case StageAttnOut:
		return KindAttnOut
	case StageFFNIn:
		return KindFFNIn
	case StageFFNDown:
		return KindFFNDown
	}
	return ""
}

func (s BlockStage) String() string {
	switch s {
	case StageEmbed:
		return "embed"
	case StageOutput:
		return "output"
	}
	return s.Kind()
}

// BlockState holds a batch of Batch sequences of Seq tokens between the
// stages of a block, row-major [Batch*Seq, width]: X the residual stream
// entering the block (width d), Ctx the attention context (heads*head_dim),
// H2 the residual stream after attention (d). StageOutput replaces X.
type BlockState struct {
	Batch, Seq int
	X, Ctx, H2 []float32
}

// BlockInputs lists the linear inputs of every block of a model with
// config cfg without building a graph: the names, sizes and weights that
// BuildCalibration's inputs have (H outputs empty).
func BlockInputs(cfg arch.Config) []CalibrationInput {
	n := names(cfg)
	var out []CalibrationInput
	for l := 0; l < cfg.Layers; l++ {
		for _, k := range calibKinds {
			in := CalibrationInput{Name: fmt.Sprintf("blk.%d.%s", l, k.kind), Layer: l, Kind: k.kind, N: inputWidth(cfg, k.kind)}
			for _, p := range k.parts {
				in.Weights = append(in.Weights, n.layer(l, p))
			}
			out = append(out, in)
		}
	}
	return out
}

func inputWidth(cfg arch.Config, kind string) int {
	switch kind {
	case KindAttnOut:
		return cfg.Heads * cfg.HeadDim
	case KindFFNDown:
		return cfg.FFN
	}
	return cfg.Hidden
}

// BlockRun is one stage of one block in an ONNX Runtime session. Run may be
// called from one goroutine at a time.
type BlockRun struct {
	cfg     arch.Config
	stage   BlockStage
	layer   int
	ins     []string // state names in input order: "ids", "x", "ctx", "h2"
	outs    []string // "h", "x", "ctx", "h2"
	hN      int
	sess    *ort.DynamicAdvancedSession
	hBuf    []float32
	hTensor *ort.Tensor[float32]
}

// Stage tensor names in the cut graphs.
const (
	blockH   = "block.h"
	blockX   = "block.x"
	blockCtx = "block.ctx"
	blockH2  = "block.h2"
)

// OpenBlockStage builds stage of block layer from src (the weights as src
// hands them out now) and opens a session for it. Only Provider, Threads,
// Logf and Build.Attention of opts are used.
func OpenBlockStage(src tensor.Source, layer int, stage BlockStage, opts CalibrationOptions) (*BlockRun, error) {
	cfg, err := arch.ConfigFromSource(src)
	if err != nil {
		return nil, err
	}
	if layer < 0 || layer >= cfg.Layers {
		return nil, fmt.Errorf("llama: block %d outside [0, %d)", layer, cfg.Layers)
	}
	if stage < StageEmbed || stage > StageOutput {
		return nil, fmt.Errorf("llama: unknown block stage %d", stage)
	}
	so, used, _, _, err := sessionOptions(opts.Provider, opts.Threads, opts.Logf)
	if err != nil {
		return nil, err
	}
	defer so.Destroy()
	if opts.Build.Attention == "" {
		opts.Build.Attention = DefaultAttention(cfg, used)
	}
	data, ins, outs, err := buildBlockStage(cfg, src, layer, stage, opts.Build)
	if err != nil {
		return nil, fmt.Errorf("llama: block %d stage %s: %w", layer, stage, err)
	}
	inNames := make([]string, len(ins))
	for i, s := range ins {
		inNames[i] = s.graph
	}
	outNames := make([]string, len(outs))
	for i, s := range outs {
		outNames[i] = s.graph
	}
	sess, err := ort.NewDynamicAdvancedSessionWithONNXData(data, inNames, outNames, so)
	if err != nil {
		return nil, fmt.Errorf("llama: onnx runtime session for block %d stage %s: %w", layer, stage, err)
	}
	r := &BlockRun{cfg: cfg, stage: stage, layer: layer, sess: sess}
	for _, s := range ins {
		r.ins = append(r.ins, s.state)
	}
	for _, s := range outs {
		r.outs = append(r.outs, s.state)
	}
	if stage.Kind() != "" {
		r.hN = inputWidth(cfg, stage.Kind())
		r.hBuf = make([]float32, r.hN*r.hN)
		if r.hTensor, err = ort.NewTensor(ort.NewShape(int64(r.hN), int64(r.hN)), r.hBuf); err != nil {
			r.Close()
			return nil, fmt.Errorf("llama: H tensor: %w", err)
		}
	}
	return r, nil
}

// Run runs the stage on st, whose batch holds ids (Batch sequences of Seq
// tokens; only StageEmbed reads the tokens, the other stages only the
// shape), calls h with the stage's H = XᵀX over the batch's tokens
// (float32 N x N, valid during the call) when the stage has one, and stores
// the stage's state output in st.
func (r *BlockRun) Run(ctx context.Context, st *BlockState, ids [][]int32, h func(h []float32)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if r.sess == nil {
		return ErrClosed
	}
	B, S := st.Batch, st.Seq
	if B <= 0 || S <= 0 || len(ids) != B {
		return fmt.Errorf("llama: block state of %d x %d tokens with %d token sequences", B, S, len(ids))
	}
	D, A := r.cfg.Hidden, r.cfg.Heads*r.cfg.HeadDim
	var vals []ort.Value
	defer func() {
		for _, v := range vals {
			v.Destroy()
		}
	}()
	input := func(data []float32, width int, what string) error {
		if len(data) != B*S*width {
			return fmt.Errorf("llama: block %d stage %s: %s has %d values, want %d x %d x %d", r.layer, r.stage, what, len(data), B, S, width)
		}
		t, err := ort.NewTensor(ort.NewShape(int64(B), int64(S), int64(width)), data)
		if err != nil {
			return fmt.Errorf("llama: %s tensor: %w", what, err)
		}
		vals = append(vals, t)
		return nil
	}
	var ins []ort.Value
	for _, s := range r.ins {
		var err error
		switch s {
		case "ids":
			flat := make([]int64, 0, B*S)
			for b, seq := range ids {
				if len(seq) != S {
					return fmt.Errorf("llama: sequence %d has %d tokens, want %d", b, len(seq), S)
				}
				for i, t := range seq {
					if t < 0 || int(t) >= r.cfg.Vocab {
						return fmt.Errorf("llama: token %d at position %d outside the vocabulary [0, %d)", t, i, r.cfg.Vocab)
					}
					flat = append(flat, int64(t))
				}
			}
			t, terr := ort.NewTensor(ort.NewShape(int64(B), int64(S)), flat)
			if terr != nil {
				return fmt.Errorf("llama: input tensor: %w", terr)
			}
			vals = append(vals, t)
		case "x":
			err = input(st.X, D, "hidden states")
		case "ctx":
			err = input(st.Ctx, A, "attention context")
		case "h2":
			err = input(st.H2, D, "post-attention hidden states")
		}
		if err != nil {
			return err
		}
		ins = append(ins, vals[len(vals)-1])
	}
	grow := func(p *[]float32, width int) []float32 {
		if len(*p) != B*S*width {
			*p = make([]float32, B*S*width)
		}
		return *p
	}
	var outs []ort.Value
	for _, s := range r.outs {
		var buf []float32
		width := D
		switch s {
		case "h":
			outs = append(outs, r.hTensor)
			continue
		case "x":
			buf = grow(&st.X, D)
		case "ctx":
			buf, width = grow(&st.Ctx, A), A
		case "h2":
			buf = grow(&st.H2, D)
		}
		t, err := ort.NewTensor(ort.NewShape(int64(B), int64(S), int64(width)), buf)
		if err != nil {
			return fmt.Errorf("llama: output tensor: %w", err)
		}
		vals = append(vals, t)
		outs = append(outs, t)
	}
	if err := runCancellable(ctx, r.sess, ins, outs, fmt.Sprintf("block %d stage %s", r.layer, r.stage)); err != nil {
		return err
	}
	if r.hN > 0 && h != nil {
		h(r.hBuf)
	}
	return nil
}

// Close releases the session.
func (r *BlockRun) Close() error {
	if r.hTensor != nil {
		r.hTensor.Destroy()
		r.hTensor = nil
	}
	if r.sess == nil {
		return nil
	}
	err := r.sess.Destroy()
	r.sess = nil
	return err
}

// stateName ties a state field of BlockState to its value in a graph.
type stateName struct{ state, graph string }

// buildBlockStage builds Build's graph of one layer (block layer of src,
// renamed to layer 0; a one-token dummy vocabulary except for StageEmbed),
// finds the residual stream and attention context in it, and cuts out the
// stage: its inputs and outputs in order.
func buildBlockStage(cfg arch.Config, src tensor.Source, layer int, stage BlockStage, bo BuildOptions) ([]byte, []stateName, []stateName, error) {
	bs, cfg1, err := newBlockSource(cfg, src, layer, stage == StageEmbed)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := checkBuildOptions(cfg1, bo); err != nil {
		return nil, nil, nil, err
	}
	b := &builder{cfg: cfg1, src: bs, infos: bs.Tensors(), n: names(cfg), gqa: bo.Attention == AttentionGQA}
	g := onnx.NewGraph("llama-block")
	if bo.Opset > 0 {
		g.Opset = bo.Opset
	}
	b.g = g
	if err := b.build(); err != nil {
		return nil, nil, nil, err
	}
	b.buf = nil
	gp := g.Proto()
	// The residual stream and attention context, found from the MatMuls
	// reading attn_output and ffn_down and the Adds of their results.
	reader := map[string]*onnxpb.NodeProto{}
	consumers := map[string][]*onnxpb.NodeProto{}
	for _, nd := range gp.Node {
		if nd.GetOpType() == "MatMul" && len(nd.Input) == 2 {
			reader[nd.Input[1]] = nd
		}
		for _, in := range nd.Input {
			consumers[in] = append(consumers[in], nd)
		}
	}
	residual := func(part string) (mm *onnxpb.NodeProto, add *onnxpb.NodeProto, err error) {
		w := b.n.layer(0, part) + ".T"
		mm, ok := reader[w]
		if !ok || len(mm.Output) != 1 {
			return nil, nil, fmt.Errorf("no MatMul reads %s", w)
		}
		for _, c := range consumers[mm.Output[0]] {
			if c.GetOpType() == "Add" && len(c.Input) == 2 && len(c.Output) == 1 {
				return mm, c, nil
			}
		}
		return nil, nil, fmt.Errorf("the output of %s is not added to the residual stream directly (an architecture this cut does not know)", w)
	}
	oMM, oAdd, err := residual(partO)
	if err != nil {
		return nil, nil, nil, err
	}
	_, dAdd, err := residual(partDown)
	if err != nil {
		return nil, nil, nil, err
	}
	ctxName, h2Name, xOutName := oMM.Input[0], oAdd.Output[0], dAdd.Output[0]
	xName := oAdd.Input[0]
	if xName == oMM.Output[0] {
		xName = oAdd.Input[1]
	}
	if dAdd.Input[0] != h2Name && dAdd.Input[1] != h2Name {
		return nil, nil, nil, fmt.Errorf("the ffn_down residual does not add to the attention residual")
	}
	D, A := int64(cfg.Hidden), int64(cfg.Heads*cfg.HeadDim)
	// Stable output names, and the H of every linear input of the layer.
	for _, o := range []struct{ from, to string }{{xName, blockX + ".in"}, {ctxName, blockCtx}, {h2Name, blockH2}, {xOutName, blockX}} {
		g.NodeOut("Identity", []string{o.from}, []string{o.to})
	}
	g.Output(blockX+".in", onnx.Float, onnx.P("batch"), onnx.P("seq"), onnx.D(D))
	g.Output(blockCtx, onnx.Float, onnx.P("batch"), onnx.P("seq"), onnx.D(A))
	g.Output(blockH2, onnx.Float, onnx.P("batch"), onnx.P("seq"), onnx.D(D))
	g.Output(blockX, onnx.Float, onnx.P("batch"), onnx.P("seq"), onnx.D(D))
	inputs, err := addCalibrationOutputs(g, cfg1, b.n, false)
	if err != nil {
		return nil, nil, nil, err
	}
	hOut := ""
	for _, in := range inputs {
		if in.Kind == stage.Kind() {
			hOut = in.Output
		}
	}
	var ins, outs []stateName
	switch stage {
	case StageEmbed:
		ins, outs = []stateName{{"ids", InputIDs}}, []stateName{{"x", blockX + ".in"}}
	case StageAttnIn:
		ins, outs = []stateName{{"ids", InputIDs}, {"x", xName}}, []stateName{{"h", hOut}}
	case StageAttnOut:
		ins, outs = []stateName{{"ids", InputIDs}, {"x", xName}}, []stateName{{"h", hOut}, {"ctx", blockCtx}}
	case StageFFNIn:
		ins, outs = []stateName{{"ids", InputIDs}, {"x", xName}, {"ctx", ctxName}}, []stateName{{"h", hOut}, {"h2", blockH2}}
	case StageFFNDown:
		ins, outs = []stateName{{"ids", InputIDs}, {"h2", h2Name}}, []stateName{{"h", hOut}}
	case StageOutput:
		ins, outs = []stateName{{"ids", InputIDs}, {"h2", h2Name}}, []stateName{{"x", blockX}}
	}
	m := g.Model()
	m.Graph = cutGraph(gp, ins, outs, D, A)
	// Keep only the inputs the cut graph reads.
	read := map[string]bool{}
	for _, nd := range m.Graph.Node {
		for _, in := range nd.Input {
			read[in] = true
		}
	}
	for _, o := range m.Graph.Output {
		read[o.GetName()] = true
	}
	ins = slices.DeleteFunc(ins, func(s stateName) bool { return !read[s.graph] })
	m.Graph.Input = slices.DeleteFunc(m.Graph.Input, func(v *onnxpb.ValueInfoProto) bool { return !read[v.GetName()] })
	data, err := onnx.MarshalModel(m)
	debug.FreeOSMemory()
	if err != nil {
		return nil, nil, nil, err
	}
	return data, ins, outs, nil
}

// cutGraph returns a copy of gp computing outs from ins: the nodes
// producing the inputs (other than input_ids) are dropped, the inputs
// declared, the outputs set, and what no output needs pruned.
func cutGraph(gp *onnxpb.GraphProto, ins, outs []stateName, D, A int64) *onnxpb.GraphProto {
	c := proto.Clone(gp).(*onnxpb.GraphProto)
	cut := map[string]bool{}
	for _, s := range ins {
		if s.graph == InputIDs {
			continue
		}
		cut[s.graph] = true
		width := D
		if s.state == "ctx" {
			width = A
		}
		g := onnx.NewGraph("")
		g.Input(s.graph, onnx.Float, onnx.P("batch"), onnx.P("seq"), onnx.D(width))
		c.Input = append(c.Input, g.Proto().Input...)
	}
	c.Node = slices.DeleteFunc(c.Node, func(nd *onnxpb.NodeProto) bool {
		return slices.ContainsFunc(nd.Output, func(o string) bool { return cut[o] })
	})
	want := map[string]bool{}
	for _, s := range outs {
		want[s.graph] = true
	}
	c.Output = slices.DeleteFunc(c.Output, func(v *onnxpb.ValueInfoProto) bool { return !want[v.GetName()] })
	pruneGraph(c)
	return c
}

// blockSource presents block layer of a source as layer 0 of a one-layer
// model (the other layers hidden), with a dummy one-token embedding, head
// and final norm unless embed is set.
type blockSource struct {
	src    tensor.Source
	infos  []tensor.Info
	rename map[string]string // layer-0 name -> the source's name
	dummy  map[string][]float32
}

// CheckBlockStages reports whether the block stages (sequential
// calibration) can run a model of config cfg. A block is cut from a
// one-layer model whose layer 0 stands for layer l: that holds while every
// layer has the same graph. Gemma-3's layers differ (sliding/global
// pattern, rotary bases) and carry post-norms: refused.
func CheckBlockStages(cfg arch.Config) error {
	if cfg.SlidingPattern > 0 || cfg.PostNorms {
		return fmt.Errorf("block stages (sequential calibration): architecture %s is not supported (per-layer attention pattern, post-norms); use one-pass calibration", cfg.Arch)
	}
	return nil
}

func newBlockSource(cfg arch.Config, src tensor.Source, layer int, embed bool) (*blockSource, arch.Config, error) {
	if err := CheckBlockStages(cfg); err != nil {
		return nil, cfg, err
	}
	n := names(cfg)
	cfg1 := cfg
	cfg1.Layers = 1
	bs := &blockSource{src: src, rename: map[string]string{}, dummy: map[string][]float32{}}
	all := src.Tensors()
	one := names(cfg).readOrder(cfg1)
	for _, name := range one {
		var from string
		switch name {
		case n.embed, n.head, n.norm:
			if embed {
				from = name
				break
			}
			if name == n.head && cfg.Tied {
				continue
			}
			if name == n.norm {
				bs.dummy[name] = make([]float32, cfg.Hidden)
				bs.infos = append(bs.infos, tensor.Info{Name: name, DType: tensor.F32, Shape: []int64{int64(cfg.Hidden)}, Size: 4 * int64(cfg.Hidden)})
			} else {
				bs.dummy[name] = make([]float32, cfg.Hidden)
				bs.infos = append(bs.infos, tensor.Info{Name: name, DType: tensor.F32, Shape: []int64{1, int64(cfg.Hidden)}, Size: 4 * int64(cfg.Hidden)})
			}
			continue
		default:
			from = layerName(cfg, n, name, layer)
		}
		ti, ok := tensor.Find(all, from)
		if !ok {
			continue // the builder reports what it misses
		}
		bs.rename[name] = from
		ti.Name = name
		bs.infos = append(bs.infos, ti)
	}
	if !embed {
		cfg1.Vocab = 1
	}
	return bs, cfg1, nil
}

// layerName maps a layer-0 tensor name (weight or bias) to layer l's.
func layerName(cfg arch.Config, n tensorNames, name string, l int) string {
	for _, p := range []string{partAttnNorm, partQ, partK, partV, partO, partQNorm, partKNorm, partFFNNorm, partGate, partUp, partDown} {
		if name == n.layer(0, p) {
			return n.layer(l, p)
		}
		if cfg.QKVBias && name == n.bias(0, p) {
			return n.bias(l, p)
		}
	}
	return name
}

func (s *blockSource) Tensors() []tensor.Info { return s.infos }
func (s *blockSource) Assets() []tensor.Asset { return s.src.Assets() }
func (s *blockSource) Close() error           { return nil }

func (s *blockSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	return nil, fmt.Errorf("llama: block source: raw read of %s: %w", name, tensor.ErrUnsupported)
}

func (s *blockSource) ReadFloat32(name string, dst []float32) ([]float32, error) {
	if v, ok := s.dummy[name]; ok {
		return append(dst[:0], v...), nil
	}
	from, ok := s.rename[name]
	if !ok {
		return nil, fmt.Errorf("llama: block source: %s: %w", name, tensor.ErrNotFound)
	}
	return s.src.ReadFloat32(from, dst)
}
