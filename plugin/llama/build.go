//go:build cgo

package llama

import (
	"fmt"
	"math"
	"slices"

	"github.com/nwc-project/nwc/loader/arch"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// Graph input and output names.
const (
	InputIDs   = "input_ids" // int64 [batch, seq]
	OutputName = "logits"    // float32 [batch, seq, vocab]
)

// The KV-cache graph's names (BuildOptions.KVCache): per layer l, the
// inputs past_key_values.l.key / .value, float32 [batch, kv_heads, past,
// head_dim], and the outputs present.l.key / .value [batch, kv_heads,
// past+seq, head_dim] (the names Hugging Face optimum uses).
func PastKey(l int) string      { return fmt.Sprintf("past_key_values.%d.key", l) }
func PastValue(l int) string    { return fmt.Sprintf("past_key_values.%d.value", l) }
func PresentKey(l int) string   { return fmt.Sprintf("present.%d.key", l) }
func PresentValue(l int) string { return fmt.Sprintf("present.%d.value", l) }

// Attention implementations Build can emit.
const (
	// AttentionStandard: standard ONNX operators only (MatMul, Where,
	// Softmax, ...); runs on any ONNX Runtime execution provider.
	AttentionStandard = "standard"
	// AttentionGQA: ONNX Runtime's com.microsoft GroupQueryAttention contrib
	// operator (causal, rotary applied inside); faster on the CPU for long
	// windows, ONNX Runtime only.
	AttentionGQA = "gqa"
)

// BuildOptions tunes Build.
type BuildOptions struct {
	// Opset is the default-domain opset, 17..23 (0: onnx.DefaultOpset = 17).
	Opset int64
	// Attention is AttentionStandard (default, "") or AttentionGQA.
	Attention string
	// Weight, when set, is called with every weight as read from the
	// source (float32, before any layout change), in read order: what the
	// runtime computes with, e.g. to check it against a decompressed file.
	// v is only valid during the call.
	Weight func(name string, v []float32)
	// KVCache adds the key-value cache inputs and outputs (PastKey,
	// PastValue, PresentKey, PresentValue per layer): positions start at the
	// past length, so one graph does prefill and one-token decode steps.
	KVCache bool
	// External, when set, receives the data of every weight of at least
	// ExternalMinBytes (ONNX external data): the returned protobuf then
	// holds only the graph and small tensors, with no 2 GB limit on the
	// weights. ONNX Runtime must be told the sink's folder (OpenSource does
	// this with a temporary file). nil: everything embedded.
	External onnx.ExternalSink
	// ExternalMin overrides ExternalMinBytes (0: ExternalMinBytes).
	ExternalMin int
	// Float16 stores the matrices (projections, MLP, embedding, head) as
	// float16 initializers, for GPU providers: activations are cast to
	// float16 around each matrix product (float16 MatMul/Gemm) and back to
	// float32; norms, rotary, attention and residuals stay float32. Half
	// the weight memory; ONNX Runtime's CPU provider has no float16 matrix
	// product on most CPUs, so Open uses it only off the CPU.
	Float16 bool
}

// ExternalMinBytes is the size from which Build puts a weight in
// BuildOptions.External (smaller ones, the norms, stay in the protobuf).
const ExternalMinBytes = 64 << 10

// Build constructs the ONNX model of a Llama decoder with cfg's
// hyper-parameters and src's weights (dequantized to float32, stored as
// initializers: inside the protobuf, or as ONNX external data written to
// opts.External) and returns the serialised model.
//
// Graph: input_ids int64 [batch, seq] (both dynamic); positions 0..seq-1;
// output logits float32 [batch, seq, vocab]. Everything is computed in
// float32:
//
//	x = Gather(embed, ids)
//	per layer: h = x + Wo·Attn(RoPE(Wq·n), RoPE(Wk·n), Wv·n), n = RMSNorm(x)
//	           x = h + Wdown·(SiLU(Wgate·m) * Wup·m),        m = RMSNorm(h)
//	logits = RMSNorm(x) · Eᵀ   (E = output head, or the embedding when tied)
//
// Rotary embedding uses the Hugging Face rotate-half convention; GGUF
// attn_q/attn_k rows (permuted by llama.cpp's converter for ggml's
// adjacent-pair rotation; not Gemma-3's) are un-permuted here. Attention is
// grouped-query with a causal mask; there is no KV cache (the graph scores
// whole windows) unless opts.KVCache.
//
// Gemma-3 (cfg's Gemma fields): x = Gather(embed, ids)·EmbedScale; the
// attention and MLP outputs are RMS-normalised before their residual adds
// (PostNorms); the MLP is GeGLU with tanh GELU; q·k is scaled by AttnScale;
// the sliding layers (cfg.IsSliding) mask keys at distance >= the window
// and rotate with their own base (cfg.RopeBase, cfg.RopeFactor); norm
// weights get NormShift added (Hugging Face's 1+w).
func Build(cfg arch.Config, src tensor.Source, opts BuildOptions) ([]byte, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	switch opts.Attention {
	case "", AttentionStandard, AttentionGQA:
	default:
		return nil, fmt.Errorf("llama: unknown attention implementation %q (want %q or %q)", opts.Attention, AttentionStandard, AttentionGQA)
	}
	if opts.Opset != 0 && (opts.Opset < 17 || opts.Opset > 23) {
		return nil, fmt.Errorf("llama: opset %d not supported (17..23)", opts.Opset)
	}
	if opts.Attention == AttentionGQA && cfg.HeadDim%16 != 0 {
		return nil, fmt.Errorf("llama: GroupQueryAttention with rotary needs head_dim %% 16 == 0, have %d (use %q attention)", cfg.HeadDim, AttentionStandard)
	}
	b := &builder{cfg: cfg, src: src, infos: src.Tensors(), n: names(cfg), gqa: opts.Attention == AttentionGQA, weight: opts.Weight, kv: opts.KVCache, f16: opts.Float16}
	if _, ok := src.(tensor.TransposedReader); ok {
		// The source hands out Wᵀ itself (a .nwc file, the prefetcher): no
		// transposing pass here.
		b.readT = b.n.transposedReads(cfg)
	}
	g := onnx.NewGraph("llama")
	if opts.Opset > 0 {
		g.Opset = opts.Opset
	}
	if opts.External != nil {
		min := ExternalMinBytes
		if opts.ExternalMin > 0 {
			min = opts.ExternalMin
		}
		g.SetExternal(opts.External, min)
	}
	b.g = g
	if err := b.build(); err != nil {
		return nil, err
	}
	return g.Marshal()
}

// gqaNode adds layer l's GroupQueryAttention node; with a KV cache its
// present key and value become the graph outputs PresentKey(l) and
// PresentValue(l).
func (b *builder) gqaNode(l int, inputs []string, attrs ...onnx.Attr) []string {
	g := b.g
	outs := g.NodeDomain(onnx.MicrosoftDomain, 1, "GroupQueryAttention", inputs, 3, attrs...)
	if b.kv {
		c := b.cfg
		for i, name := range []string{PresentKey(l), PresentValue(l)} {
			g.NodeOut("Identity", []string{outs[1+i]}, []string{name})
			g.Output(name, onnx.Float, onnx.P("batch"), onnx.D(int64(c.KVHeads)), onnx.P("total"), onnx.D(int64(c.HeadDim)))
		}
	}
	return outs
}

type builder struct {
	cfg    arch.Config
	src    tensor.Source
	infos  []tensor.Info
	n      tensorNames
	g      *onnx.Graph
	buf    []float32
	gqa    bool
	kv     bool
	f16    bool
	weight func(string, []float32)
	// readT: the weights read as their transpose (transposedReads).
	readT func(string) bool
}

// matrix adds a weight matrix initializer: float16 with BuildOptions.Float16,
// else float32.
func (b *builder) matrix(name string, shape []int64, data []float32) string {
	if b.f16 {
		return b.g.InitFloat16(name, shape, data)
	}
	return b.g.InitFloat32(name, shape, data)
}

// toF16 and toF32 cast activations around float16 weights (identity
// without BuildOptions.Float16).
func (b *builder) toF16(x string) string {
	if !b.f16 {
		return x
	}
	return b.g.Node("Cast", []string{x}, onnx.AttrInt("to", int64(onnx.Float16)))
}

func (b *builder) toF32(x string) string {
	if !b.f16 {
		return x
	}
	return b.g.Node("Cast", []string{x}, onnx.AttrInt("to", int64(onnx.Float)))
}

// mm is x·w for a weight w added by linear: a float32 MatMul, or with
// float16 weights Cast(MatMul(Cast(x, f16), w), f32).
func (b *builder) mm(x, w string) string {
	return b.toF32(b.g.Op("MatMul", b.toF16(x), w))
}

// read reads the named tensor as float32 and checks its shape.
func (b *builder) read(name string, shape ...int64) ([]float32, error) {
	info, ok := tensor.Find(b.infos, name)
	if !ok {
		return nil, fmt.Errorf("llama: weight %s: %w", name, tensor.ErrNotFound)
	}
	if !slices.Equal(info.Shape, shape) {
		return nil, fmt.Errorf("llama: weight %s has shape %v, want %v: %w", name, info.Shape, shape, tensor.ErrShape)
	}
	v, err := b.src.ReadFloat32(name, b.buf)
	if err != nil {
		return nil, fmt.Errorf("llama: read %s: %w", name, err)
	}
	b.buf = v
	if b.weight != nil {
		b.weight(name, v)
	}
	return v, nil
}

// readTransposed reads the weight W [out, in] as Wᵀ [in, out]
// (tensor.ReadFloat32T) and checks its shape; BuildOptions.Weight still
// sees W.
func (b *builder) readTransposed(name string, out, in int) ([]float32, error) {
	info, ok := tensor.Find(b.infos, name)
	if !ok {
		return nil, fmt.Errorf("llama: weight %s: %w", name, tensor.ErrNotFound)
	}
	if want := []int64{int64(out), int64(in)}; !slices.Equal(info.Shape, want) {
		return nil, fmt.Errorf("llama: weight %s has shape %v, want %v: %w", name, info.Shape, want, tensor.ErrShape)
	}
	wt, err := tensor.ReadFloat32T(b.src, name, nil)
	if err != nil {
		return nil, fmt.Errorf("llama: read %s: %w", name, err)
	}
	if len(wt) != out*in {
		return nil, fmt.Errorf("llama: read %s: %d values for shape [%d %d]: %w", name, len(wt), out, in, tensor.ErrShape)
	}
	if b.weight != nil {
		b.weight(name, tensor.Transpose(wt, in, out, nil))
	}
	return wt, nil
}

// vector adds a 1-D weight as an initializer under its own name.
func (b *builder) vector(name string, n int) (string, error) {
	v, err := b.read(name, int64(n))
	if err != nil {
		return "", err
	}
	return b.g.InitFloat32(name, []int64{int64(n)}, v), nil
}

// normWeight adds an RMSNorm weight [n]: as stored, or plus
// Config.NormShift in float32 (Gemma's Hugging Face 1+w).
func (b *builder) normWeight(name string, n int) (string, error) {
	if b.cfg.NormShift == 0 {
		return b.vector(name, n)
	}
	v, err := b.read(name, int64(n))
	if err != nil {
		return "", err
	}
	shift := float32(b.cfg.NormShift)
	w := make([]float32, len(v))
	for i, x := range v {
		w[i] = x + shift
	}
	return b.g.InitFloat32(name, []int64{int64(n)}, w), nil
}

// linear adds the weight W [out, in] of y = x·Wᵀ as the initializer
// "<name>.T" of shape [in, out], after un-permuting rotary rows when
// heads > 0 (GGUF attn_q / attn_k).
func (b *builder) linear(name string, out, in int, heads int) (string, error) {
	if b.readT != nil && b.readT(name) { // never GGUF's attn_q/attn_k (transposedReads)
		wt, err := b.readTransposed(name, out, in)
		if err != nil {
			return "", err
		}
		return b.matrix(name+".T", []int64{int64(in), int64(out)}, wt), nil
	}
	w, err := b.read(name, int64(out), int64(in))
	if err != nil {
		return "", err
	}
	if heads > 0 && b.cfg.PermutedQK() {
		w = arch.PermuteQK(w, out, in, heads, true)
	}
	return b.matrix(name+".T", []int64{int64(in), int64(out)}, tensor.Transpose(w, out, in, nil)), nil
}

func (b *builder) build() error {
	c := b.cfg
	g := b.g
	D, H, KV, hd := c.Hidden, c.Heads, c.KVHeads, c.HeadDim
	G := H / KV
	ids := g.Input(InputIDs, onnx.Int64, onnx.P("batch"), onnx.P("seq"))

	// Embedding (kept as [vocab, d]; the tied head reuses it through Gemm).
	emb, err := b.read(b.n.embed, int64(c.Vocab), int64(D))
	if err != nil {
		return err
	}
	embName := b.matrix(b.n.embed, []int64{int64(c.Vocab), int64(D)}, emb)
	x := b.toF32(g.Node("Gather", []string{embName, ids}, onnx.AttrInt("axis", 0)))
	if c.EmbedScale > 0 { // Gemma: the input embeddings only, not the tied head
		x = g.Op("Mul", x, g.ScalarFloat32(float32(c.EmbedScale)))
	}

	// Positions and the rotary tables cos/sin [seq, 1, hd], in float32 as
	// Hugging Face computes them: inv_freq = theta^(-2j/hd), angle = pos*inv_freq.
	idsShape := g.Op("Shape", ids)
	seqLen := g.Node("Gather", []string{idsShape, g.ScalarInt64(1)}, onnx.AttrInt("axis", 0))
	// With a KV cache the queries sit at positions past..total-1 and the
	// keys at 0..total-1 (past: the cache's length, the same for every
	// sequence of the batch); without, both are 0..seq-1.
	var pastLen, totalLen, pos, kpos string
	if b.kv {
		past0 := g.Input(PastKey(0), onnx.Float, onnx.P("batch"), onnx.D(int64(KV)), onnx.P("past"), onnx.D(int64(hd)))
		pastLen = g.Node("Gather", []string{g.Op("Shape", past0), g.ScalarInt64(2)}, onnx.AttrInt("axis", 0))
		totalLen = g.Op("Add", pastLen, seqLen)
		pos = g.Op("Range", pastLen, totalLen, g.ScalarInt64(1))
		kpos = g.Op("Range", g.ScalarInt64(0), totalLen, g.ScalarInt64(1))
	} else {
		totalLen = seqLen
		pos = g.Op("Range", g.ScalarInt64(0), seqLen, g.ScalarInt64(1)) // [seq] int64
		kpos = pos
	}
	posF := g.Node("Cast", []string{pos}, onnx.AttrInt("to", int64(onnx.Float)))
	// The rotary tables of each (base, linear factor) the layers use
	// (Gemma-3: one for the sliding layers, one for the global ones), made
	// on first use.
	type ropeKey struct{ base, factor float64 }
	type ropeTables struct {
		invF, angles   string // inv_freq [1, hd]; pos*inv_freq [seq, hd]
		cos, sin       string // [seq, 1, hd] (standard attention)
		gqaCos, gqaSin string // [total, hd/2] (GroupQueryAttention caches)
	}
	ropes := map[ropeKey]*ropeTables{}
	ropeFor := func(l int) *ropeTables {
		k := ropeKey{c.RopeBase(l), c.RopeFactor(l)}
		if t, ok := ropes[k]; ok {
			return t
		}
		invFreq := make([]float32, hd)
		for j := 0; j < hd/2; j++ {
			// HF: 1 / (base ** (arange(0, dim, 2).float() / dim)), in
			// float32; linear scaling divides it by the factor.
			e := float32(2*j) / float32(hd)
			f := float32(1 / math.Pow(k.base, float64(e)))
			if k.factor != 1 {
				f /= float32(k.factor)
			}
			invFreq[j], invFreq[j+hd/2] = f, f
		}
		name := "rope.inv_freq"
		if len(ropes) > 0 {
			name = fmt.Sprintf("rope.inv_freq.%d", len(ropes))
		}
		t := &ropeTables{invF: g.InitFloat32(name, []int64{1, int64(hd)}, invFreq)}
		t.angles = g.Op("Mul", g.Node("Unsqueeze", []string{posF, g.ConstInt64(1)}), t.invF) // [seq, hd]
		ropes[k] = t
		return t
	}

	eps := g.ScalarFloat32(float32(c.RMSEps))
	two := g.ScalarFloat32(2)
	lastAxis := g.ConstInt64(-1)
	rmsnorm := func(x, w string) string {
		var ms string
		if g.Opset >= 18 { // axes became an input
			ms = g.Node("ReduceMean", []string{g.Op("Pow", x, two), lastAxis}, onnx.AttrInt("keepdims", 1))
		} else {
			ms = g.Node("ReduceMean", []string{g.Op("Pow", x, two)}, onnx.AttrInts("axes", -1), onnx.AttrInt("keepdims", 1))
		}
		return g.Op("Mul", w, g.Op("Div", x, g.Op("Sqrt", g.Op("Add", ms, eps))))
	}

	// GroupQueryAttention inputs: the per-sequence seqlens_k (total length
	// - 1, int32 [batch]) and the total length (int32 scalar), then per
	// rotary table (gqaRope) the caches [total, hd/2].
	var gqaIn []string
	if b.gqa {
		batch := g.Node("Slice", []string{idsShape, g.ConstInt64(0), g.ConstInt64(1)})
		seqM1 := g.Op("Sub", totalLen, g.ScalarInt64(1))
		seqlensK := g.Node("Cast", []string{g.Op("Expand", seqM1, batch)}, onnx.AttrInt("to", int64(onnx.Int32)))
		total := g.Node("Cast", []string{totalLen}, onnx.AttrInt("to", int64(onnx.Int32)))
		gqaIn = []string{seqlensK, total}
	}
	gqaRope := func(l int) []string {
		t := ropeFor(l)
		if t.gqaCos == "" {
			// The caches cover every position up to the total length.
			cacheAngles := t.angles
			if b.kv {
				kposF := g.Node("Cast", []string{kpos}, onnx.AttrInt("to", int64(onnx.Float)))
				cacheAngles = g.Op("Mul", g.Node("Unsqueeze", []string{kposF, g.ConstInt64(1)}), t.invF)
			}
			anglesHalf := g.Node("Slice", []string{cacheAngles, g.ConstInt64(0), g.ConstInt64(int64(hd / 2)), g.ConstInt64(1)})
			t.gqaCos, t.gqaSin = g.Op("Cos", anglesHalf), g.Op("Sin", anglesHalf)
		}
		return []string{t.gqaCos, t.gqaSin}
	}
	// attnScale multiplies q·k: Config.AttnScale, else 1/sqrt(head_dim).
	attnScale := float32(1 / math.Sqrt(float64(hd)))
	if c.AttnScale > 0 {
		attnScale = float32(c.AttnScale)
	}

	// The standard-operator attention's shared values, made on first use.
	var keep, keepSliding, negInf, scale, shape4q, shape4kv, shape5q, shape5kv, shape3 string
	setup := func() {
		if keep != "" {
			return
		}
		// Causal mask [seq, total]: key position <= query position.
		qp, kp := g.Op("Unsqueeze", pos, g.ConstInt64(1)), g.Op("Unsqueeze", kpos, g.ConstInt64(0))
		keep = g.Op("LessOrEqual", kp, qp)
		if c.MasksWindow() {
			// Sliding layers: also query - key < window.
			keepSliding = g.Op("And", keep, g.Op("Less", g.Op("Sub", qp, kp), g.ScalarInt64(int64(c.SlidingWindow))))
		}
		negInf = g.ScalarFloat32(float32(math.Inf(-1)))
		scale = g.ScalarFloat32(attnScale)
		shape4q = g.ConstInt64(0, 0, int64(H), int64(hd))
		shape4kv = g.ConstInt64(0, 0, int64(KV), int64(hd))
		shape5q = g.ConstInt64(0, 0, int64(KV), int64(G), int64(hd))
		shape5kv = g.ConstInt64(0, 0, int64(KV), 1, int64(hd))
		shape3 = g.ConstInt64(0, 0, int64(H*hd))
	}
	rope := func(x string, t *ropeTables) string { // x [batch, seq, heads, hd]
		if t.cos == "" {
			angles3 := g.Op("Unsqueeze", t.angles, g.ConstInt64(1)) // [seq, 1, hd]
			t.cos, t.sin = g.Op("Cos", angles3), g.Op("Sin", angles3)
		}
		cos, sin := t.cos, t.sin
		splitAttrs := []onnx.Attr{onnx.AttrInt("axis", -1)}
		if g.Opset >= 18 { // num_outputs is required from opset 18
			splitAttrs = append(splitAttrs, onnx.AttrInt("num_outputs", 2))
		}
		halves := g.NodeN("Split", []string{x}, 2, splitAttrs...)
		rot := g.Node("Concat", []string{g.Op("Neg", halves[1]), halves[0]}, onnx.AttrInt("axis", -1))
		return g.Op("Add", g.Op("Mul", x, cos), g.Op("Mul", rot, sin))
	}
	transpose := func(x string, perm ...int64) string {
		return g.Node("Transpose", []string{x}, onnx.AttrInts("perm", perm...))
	}
	// headNorm is Qwen3's per-head RMSNorm of q or k ([b, s, heads, hd],
	// weight w [hd]); identity when w is "".
	headNorm := func(x, w string) string {
		if w == "" {
			return x
		}
		return rmsnorm(x, w)
	}
	// attention in standard ONNX operators on the projections q, k, v
	// [b, s, heads*hd] (biases added); returns Wo·Attn(...) [b, s, d].
	attention := func(l int, q, k, v, qNorm, kNorm, wo string) string {
		setup()
		rt := ropeFor(l)
		q = rope(headNorm(g.Op("Reshape", q, shape4q), qNorm), rt)  // [b, s, H, hd]
		k = rope(headNorm(g.Op("Reshape", k, shape4kv), kNorm), rt) // [b, s, KV, hd]
		// Grouped-query attention without copying kv heads: query head
		// h = kv*G + g attends with kv head kv (as HF's repeat_kv).
		q5 := transpose(g.Op("Reshape", q, shape5q), 0, 2, 3, 1, 4) // [b, KV, G, s, hd]
		var kT, v5 string
		if b.kv {
			// present = past ++ new along the sequence, [b, KV, total, hd].
			k4 := transpose(k, 0, 2, 1, 3)
			v4 := transpose(g.Op("Reshape", v, shape4kv), 0, 2, 1, 3)
			pk, pv := PastKey(l), PastValue(l)
			if l > 0 {
				g.Input(pk, onnx.Float, onnx.P("batch"), onnx.D(int64(KV)), onnx.P("past"), onnx.D(int64(hd)))
			}
			g.Input(pv, onnx.Float, onnx.P("batch"), onnx.D(int64(KV)), onnx.P("past"), onnx.D(int64(hd)))
			presK, presV := PresentKey(l), PresentValue(l)
			g.NodeOut("Concat", []string{pk, k4}, []string{presK}, onnx.AttrInt("axis", 2))
			g.NodeOut("Concat", []string{pv, v4}, []string{presV}, onnx.AttrInt("axis", 2))
			g.Output(presK, onnx.Float, onnx.P("batch"), onnx.D(int64(KV)), onnx.P("total"), onnx.D(int64(hd)))
			g.Output(presV, onnx.Float, onnx.P("batch"), onnx.D(int64(KV)), onnx.P("total"), onnx.D(int64(hd)))
			one := g.ConstInt64(2)
			kT = g.Op("Unsqueeze", transpose(presK, 0, 1, 3, 2), one) // [b, KV, 1, hd, total]
			v5 = g.Op("Unsqueeze", presV, one)                        // [b, KV, 1, total, hd]
		} else {
			kT = transpose(g.Op("Reshape", k, shape5kv), 0, 2, 3, 4, 1) // [b, KV, 1, hd, s]
			v5 = transpose(g.Op("Reshape", v, shape5kv), 0, 2, 3, 1, 4) // [b, KV, 1, s, hd]
		}
		scores := g.Op("Mul", g.Op("MatMul", q5, kT), scale) // [b, KV, G, s, total]
		mask := keep
		if c.MasksWindow() && c.IsSliding(l) {
			mask = keepSliding
		}
		scores = g.Op("Where", mask, scores, negInf)
		probs := g.Node("Softmax", []string{scores}, onnx.AttrInt("axis", -1))
		ctx := g.Op("MatMul", probs, v5)                             // [b, KV, G, s, hd]
		ctx = g.Op("Reshape", transpose(ctx, 0, 3, 1, 2, 4), shape3) // [b, s, H*hd]
		return b.mm(ctx, wo)
	}

	// postNorm is Gemma's norm of a block output before its residual add
	// (Config.PostNorms; x itself otherwise), with the weight named name.
	postNorm := func(x, name string) (string, error) {
		if !c.PostNorms {
			return x, nil
		}
		w, err := b.normWeight(name, D)
		if err != nil {
			return "", err
		}
		return rmsnorm(x, w), nil
	}
	for l := 0; l < c.Layers; l++ {
		ln := func(part string) string { return b.n.layer(l, part) }
		attnNorm, err := b.normWeight(ln(partAttnNorm), D)
		if err != nil {
			return err
		}
		wq, err := b.linear(ln(partQ), H*hd, D, H)
		if err != nil {
			return err
		}
		wk, err := b.linear(ln(partK), KV*hd, D, KV)
		if err != nil {
			return err
		}
		wv, err := b.linear(ln(partV), KV*hd, D, 0)
		if err != nil {
			return err
		}
		wo, err := b.linear(ln(partO), D, H*hd, 0)
		if err != nil {
			return err
		}
		qNorm, kNorm, err := b.qkNorms(l)
		if err != nil {
			return err
		}
		n := rmsnorm(x, attnNorm)
		q, k, v, err := b.qkv(l, n, wq, wk, wv)
		if err != nil {
			return err
		}
		var a string // the attention block's output [b, s, d]
		if b.gqa {
			past := []string{"", ""}
			if b.kv {
				past = []string{PastKey(l), PastValue(l)}
				if l > 0 {
					g.Input(past[0], onnx.Float, onnx.P("batch"), onnx.D(int64(KV)), onnx.P("past"), onnx.D(int64(hd)))
				}
				g.Input(past[1], onnx.Float, onnx.P("batch"), onnx.D(int64(KV)), onnx.P("past"), onnx.D(int64(hd)))
			}
			if qNorm != "" {
				// GroupQueryAttention applies the rotary itself: normalise
				// per head before it, in [b, s, heads, hd], and flatten back.
				flat := g.ConstInt64(0, 0, -1)
				q = g.Op("Reshape", rmsnorm(g.Op("Reshape", q, g.ConstInt64(0, 0, int64(H), int64(hd))), qNorm), flat)
				k = g.Op("Reshape", rmsnorm(g.Op("Reshape", k, g.ConstInt64(0, 0, int64(KV), int64(hd))), kNorm), flat)
			}
			in := append([]string{q, k, v}, past...)
			attrs := []onnx.Attr{
				onnx.AttrInt("num_heads", int64(H)), onnx.AttrInt("kv_num_heads", int64(KV)),
				onnx.AttrInt("do_rotary", 1), onnx.AttrInt("rotary_interleaved", 0),
				onnx.AttrFloat("scale", attnScale)}
			if c.MasksWindow() && c.IsSliding(l) {
				// local_window_size is the window in positions, the query's
				// own included (a window one shorter or longer fails
				// TestFamiliesMatchTransformers/gemma3).
				attrs = append(attrs, onnx.AttrInt("local_window_size", int64(c.SlidingWindow)))
			}
			outs := b.gqaNode(l, append(append(in, gqaIn...), gqaRope(l)...), attrs...)
			a = b.mm(outs[0], wo)
		} else {
			a = attention(l, q, k, v, qNorm, kNorm, wo)
		}
		if a, err = postNorm(a, ln(partPostAttnNorm)); err != nil {
			return err
		}
		x = g.Op("Add", x, a)

		ffnNorm, err := b.normWeight(ln(partFFNNorm), D)
		if err != nil {
			return err
		}
		wg, err := b.linear(ln(partGate), c.FFN, D, 0)
		if err != nil {
			return err
		}
		wu, err := b.linear(ln(partUp), c.FFN, D, 0)
		if err != nil {
			return err
		}
		wd, err := b.linear(ln(partDown), D, c.FFN, 0)
		if err != nil {
			return err
		}
		m := rmsnorm(x, ffnNorm)
		gate := b.mm(m, wg)
		var act string
		if c.Act == arch.ActGELUTanh {
			act = g.Op("Mul", geluTanh(g, gate), b.mm(m, wu))
		} else {
			act = g.Op("Mul", g.Op("Mul", gate, g.Op("Sigmoid", gate)), b.mm(m, wu))
		}
		f, err := postNorm(b.mm(act, wd), ln(partPostFFNNorm))
		if err != nil {
			return err
		}
		x = g.Op("Add", x, f)
	}

	normW, err := b.normWeight(b.n.norm, D)
	if err != nil {
		return err
	}
	x = rmsnorm(x, normW)
	head := embName
	if !c.Tied {
		w, err := b.read(b.n.head, int64(c.Vocab), int64(D))
		if err != nil {
			return err
		}
		head = b.matrix(b.n.head, []int64{int64(c.Vocab), int64(D)}, w)
	}
	// logits = x · headᵀ as one Gemm over [batch*seq, d] (transB: the
	// [vocab, d] weight is used as stored, shared with the embedding).
	flat := g.Op("Reshape", x, g.ConstInt64(-1, int64(D)))
	logits2 := b.toF32(g.Node("Gemm", []string{b.toF16(flat), head}, onnx.AttrInt("transB", 1)))
	outShape := g.Node("Concat", []string{
		g.Node("Slice", []string{idsShape, g.ConstInt64(0), g.ConstInt64(2)}),
		g.ConstInt64(int64(c.Vocab)),
	}, onnx.AttrInt("axis", 0))
	g.NodeOut("Reshape", []string{logits2, outShape}, []string{OutputName})
	g.Output(OutputName, onnx.Float, onnx.P("batch"), onnx.P("seq"), onnx.D(int64(c.Vocab)))
	return nil
}

// qkv returns the q, k and v projections of n [b, s, d] by the weights wq,
// wk, wv added by linear, plus layer l's biases when the model has them
// (Config.QKVBias).
func (b *builder) qkv(l int, n, wq, wk, wv string) (q, k, v string, err error) {
	c := b.cfg
	q, k, v = b.mm(n, wq), b.mm(n, wk), b.mm(n, wv)
	if !c.QKVBias {
		return q, k, v, nil
	}
	out := []*string{&q, &k, &v}
	for i, p := range []struct {
		part  string
		width int
	}{{partQ, c.Heads * c.HeadDim}, {partK, c.KVHeads * c.HeadDim}, {partV, c.KVHeads * c.HeadDim}} {
		bias, err := b.vector(b.n.bias(l, p.part), p.width)
		if err != nil {
			return "", "", "", err
		}
		*out[i] = b.g.Op("Add", *out[i], bias)
	}
	return q, k, v, nil
}

// qkNorms adds layer l's per-head q and k RMSNorm weights [head_dim]
// (Config.QKNorm), or returns "" for both.
func (b *builder) qkNorms(l int) (qNorm, kNorm string, err error) {
	if !b.cfg.QKNorm {
		return "", "", nil
	}
	if qNorm, err = b.normWeight(b.n.layer(l, partQNorm), b.cfg.HeadDim); err != nil {
		return "", "", err
	}
	if kNorm, err = b.normWeight(b.n.layer(l, partKNorm), b.cfg.HeadDim); err != nil {
		return "", "", err
	}
	return qNorm, kNorm, nil
}

// geluTanh is GELU with the tanh approximation (PyTorch's
// gelu(approximate="tanh"), Gemma's gelu_pytorch_tanh):
// 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))).
func geluTanh(g *onnx.Graph, x string) string {
	x3 := g.Op("Mul", g.Op("Mul", x, x), x)
	inner := g.Op("Mul", g.Op("Add", x, g.Op("Mul", x3, g.ScalarFloat32(0.044715))), g.ScalarFloat32(float32(math.Sqrt(2/math.Pi))))
	return g.Op("Mul", g.Op("Mul", x, g.ScalarFloat32(0.5)), g.Op("Add", g.Op("Tanh", inner), g.ScalarFloat32(1)))
}
