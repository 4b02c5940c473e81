package bert

import (
	"fmt"
	"math"
	"slices"

	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/plugin/onnx"
)

// Graph input and output names.
const (
	InputIDs      = "input_ids"         // int64 [batch, seq]
	InputMask     = "attention_mask"    // int64 [batch, seq]: 1 token, 0 padding
	OutputHidden  = "last_hidden_state" // float32 [batch, seq, hidden]
	maskFillValue = -math.MaxFloat32    // torch.finfo(float32).min, as BertModel's extended mask
)

// Kinds of linear inputs of a BERT block (four distinct inputs of its six
// linear layers).
const (
	KindAttnIn  = "attn_qkv"    // the layer input: query, key, value
	KindAttnOut = "attn_output" // attention context: attention.output.dense
	KindFFNIn   = "ffn_in"      // post-attention LayerNorm output: intermediate.dense
	KindFFNOut  = "ffn_out"     // GELU(intermediate): output.dense
)

// linearInput is one distinct linear input found while building: the
// graph value X [batch, seq, n] and the weights that read it.
type linearInput struct {
	layer   int
	kind    string
	value   string
	n       int
	weights []string
}

// Build constructs the ONNX model of a BERT encoder (transformers
// BertModel without the pooler) with cfg's hyper-parameters and src's
// weights as float32 initializers, and returns the serialised model.
//
// Graph: input_ids and attention_mask int64 [batch, seq]; output
// last_hidden_state float32 [batch, seq, hidden]. Token types are all 0
// (single sentences), positions 0..seq-1:
//
//	x = LN(word[ids] + pos[0..seq) + type[0])
//	per layer: a = LN(x + Wo·Attn(Wq·x+bq, Wk·x+bk, Wv·x+bv; mask) + bo)
//	           x = LN(a + W2·GELU(W1·a + b1) + b2)        (GELU with erf)
//
// Padding keys get torch.finfo(float32).min added to their scores, as
// BertModel's extended attention mask does.
func Build(cfg Config, src tensor.Source) ([]byte, error) {
	b, err := build(cfg, src, "bert")
	if err != nil {
		return nil, err
	}
	return b.g.Marshal()
}

type builder struct {
	cfg    Config
	src    tensor.Source
	infos  []tensor.Info
	g      *onnx.Graph
	inputs []linearInput
}

func build(cfg Config, src tensor.Source, name string) (*builder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	b := &builder{cfg: cfg, src: src, infos: src.Tensors(), g: onnx.NewGraph(name)}
	if err := b.build(); err != nil {
		return nil, err
	}
	return b, nil
}

// read reads the named tensor as float32 and checks its shape.
func (b *builder) read(name string, shape ...int64) ([]float32, error) {
	info, ok := tensor.Find(b.infos, name)
	if !ok {
		return nil, fmt.Errorf("bert: weight %s: %w", name, tensor.ErrNotFound)
	}
	if !slices.Equal(info.Shape, shape) {
		return nil, fmt.Errorf("bert: weight %s has shape %v, want %v: %w", name, info.Shape, shape, tensor.ErrShape)
	}
	v, err := b.src.ReadFloat32(name, nil)
	if err != nil {
		return nil, fmt.Errorf("bert: read %s: %w", name, err)
	}
	if int64(len(v)) != tensor.NumElements(shape) {
		return nil, fmt.Errorf("bert: read %s: %d values for shape %v: %w", name, len(v), shape, tensor.ErrShape)
	}
	return v, nil
}

// vector adds a 1-D weight as an initializer under its own name.
func (b *builder) vector(name string, n int) (string, error) {
	v, err := b.read(name, int64(n))
	if err != nil {
		return "", err
	}
	return b.g.InitFloat32(name, []int64{int64(n)}, v), nil
}

// linear returns x·Wᵀ + bias for the weight "<part>.weight" [out, in] of
// layer l (stored as the initializer "<name>.T" [in, out], read through
// tensor.ReadFloat32T: a .nwc file decodes straight into that layout).
func (b *builder) linear(x string, l int, part string, out, in int) (string, error) {
	name := b.cfg.layer(l, part+".weight")
	info, ok := tensor.Find(b.infos, name)
	if !ok {
		return "", fmt.Errorf("bert: weight %s: %w", name, tensor.ErrNotFound)
	}
	if want := []int64{int64(out), int64(in)}; !slices.Equal(info.Shape, want) {
		return "", fmt.Errorf("bert: weight %s has shape %v, want %v: %w", name, info.Shape, want, tensor.ErrShape)
	}
	wt, err := tensor.ReadFloat32T(b.src, name, nil)
	if err != nil {
		return "", fmt.Errorf("bert: read %s: %w", name, err)
	}
	if len(wt) != out*in {
		return "", fmt.Errorf("bert: read %s: %d values for shape [%d %d]: %w", name, len(wt), out, in, tensor.ErrShape)
	}
	w := b.g.InitFloat32(name+".T", []int64{int64(in), int64(out)}, wt)
	bias, err := b.vector(b.cfg.layer(l, part+".bias"), out)
	if err != nil {
		return "", err
	}
	return b.g.Op("Add", b.g.Op("MatMul", x, w), bias), nil
}

// layerNorm adds LayerNormalization over the last axis with the weight and
// bias "<prefix>.weight" / "<prefix>.bias".
func (b *builder) layerNorm(x, prefix string) (string, error) {
	D := b.cfg.Hidden
	w, err := b.vector(prefix+".weight", D)
	if err != nil {
		return "", err
	}
	bias, err := b.vector(prefix+".bias", D)
	if err != nil {
		return "", err
	}
	return b.g.Node("LayerNormalization", []string{x, w, bias},
		onnx.AttrInt("axis", -1), onnx.AttrFloat("epsilon", float32(b.cfg.LayerNormEps))), nil
}

func (b *builder) build() error {
	c, g := b.cfg, b.g
	D, H, hd := c.Hidden, c.Heads, c.HeadDim()
	ids := g.Input(InputIDs, onnx.Int64, onnx.P("batch"), onnx.P("seq"))
	mask := g.Input(InputMask, onnx.Int64, onnx.P("batch"), onnx.P("seq"))

	word, err := b.read(c.Prefix+"embeddings.word_embeddings.weight", int64(c.Vocab), int64(D))
	if err != nil {
		return err
	}
	pos, err := b.read(c.Prefix+"embeddings.position_embeddings.weight", int64(c.MaxPositions), int64(D))
	if err != nil {
		return err
	}
	typ, err := b.read(c.Prefix+"embeddings.token_type_embeddings.weight", int64(c.TypeVocab), int64(D))
	if err != nil {
		return err
	}
	wordName := g.InitFloat32(c.Prefix+"embeddings.word_embeddings.weight", []int64{int64(c.Vocab), int64(D)}, word)
	posName := g.InitFloat32(c.Prefix+"embeddings.position_embeddings.weight", []int64{int64(c.MaxPositions), int64(D)}, pos)
	type0 := g.InitFloat32("token_type_0", []int64{int64(D)}, typ[:D])

	seqLen := g.Node("Gather", []string{g.Op("Shape", ids), g.ScalarInt64(1)}, onnx.AttrInt("axis", 0))
	positions := g.Op("Range", g.ScalarInt64(0), seqLen, g.ScalarInt64(1))
	x := g.Op("Add", g.Op("Add", g.Node("Gather", []string{wordName, ids}, onnx.AttrInt("axis", 0)),
		g.Node("Gather", []string{posName, positions}, onnx.AttrInt("axis", 0))), type0)
	if x, err = b.layerNorm(x, c.Prefix+"embeddings.LayerNorm"); err != nil {
		return err
	}

	// (1 - mask) * finfo.min, [batch, 1, 1, seq].
	maskF := g.Node("Cast", []string{mask}, onnx.AttrInt("to", int64(onnx.Float)))
	bias := g.Op("Mul", g.Op("Sub", g.ScalarFloat32(1), maskF), g.ScalarFloat32(maskFillValue))
	bias = g.Op("Unsqueeze", bias, g.ConstInt64(1, 2))
	scale := g.ScalarFloat32(float32(1 / math.Sqrt(float64(hd))))
	shape4 := g.ConstInt64(0, 0, int64(H), int64(hd))
	shape3 := g.ConstInt64(0, 0, int64(D))
	transpose := func(x string, perm ...int64) string {
		return g.Node("Transpose", []string{x}, onnx.AttrInts("perm", perm...))
	}
	sqrt2 := g.ScalarFloat32(float32(math.Sqrt2))
	half, one := g.ScalarFloat32(0.5), g.ScalarFloat32(1)

	for l := 0; l < c.Layers; l++ {
		w := func(part string) string { return c.layer(l, part+".weight") }
		b.inputs = append(b.inputs, linearInput{l, KindAttnIn, x, D, []string{w(PartQuery), w(PartKey), w(PartValue)}})
		q, err := b.linear(x, l, PartQuery, D, D)
		if err != nil {
			return err
		}
		k, err := b.linear(x, l, PartKey, D, D)
		if err != nil {
			return err
		}
		v, err := b.linear(x, l, PartValue, D, D)
		if err != nil {
			return err
		}
		q4 := transpose(g.Op("Reshape", q, shape4), 0, 2, 1, 3) // [b, H, s, hd]
		kT := transpose(g.Op("Reshape", k, shape4), 0, 2, 3, 1) // [b, H, hd, s]
		v4 := transpose(g.Op("Reshape", v, shape4), 0, 2, 1, 3) // [b, H, s, hd]
		scores := g.Op("Add", g.Op("Mul", g.Op("MatMul", q4, kT), scale), bias)
		probs := g.Node("Softmax", []string{scores}, onnx.AttrInt("axis", -1))
		ctx := g.Op("Reshape", transpose(g.Op("MatMul", probs, v4), 0, 2, 1, 3), shape3) // [b, s, D]

		b.inputs = append(b.inputs, linearInput{l, KindAttnOut, ctx, D, []string{w(PartAttnOut)}})
		ao, err := b.linear(ctx, l, PartAttnOut, D, D)
		if err != nil {
			return err
		}
		a, err := b.layerNorm(g.Op("Add", ao, x), c.layer(l, "attention.output.LayerNorm"))
		if err != nil {
			return err
		}
		b.inputs = append(b.inputs, linearInput{l, KindFFNIn, a, D, []string{w(PartInter)}})
		inter, err := b.linear(a, l, PartInter, c.FFN, D)
		if err != nil {
			return err
		}
		// GELU(x) = 0.5 x (1 + erf(x / sqrt 2)), transformers' "gelu".
		act := g.Op("Mul", g.Op("Mul", inter, half), g.Op("Add", one, g.Op("Erf", g.Op("Div", inter, sqrt2))))
		b.inputs = append(b.inputs, linearInput{l, KindFFNOut, act, c.FFN, []string{w(PartOutput)}})
		o, err := b.linear(act, l, PartOutput, D, c.FFN)
		if err != nil {
			return err
		}
		if x, err = b.layerNorm(g.Op("Add", o, a), c.layer(l, "output.LayerNorm")); err != nil {
			return err
		}
	}
	g.NodeOut("Identity", []string{x}, []string{OutputHidden})
	g.Output(OutputHidden, onnx.Float, onnx.P("batch"), onnx.P("seq"), onnx.D(int64(D)))
	return nil
}
