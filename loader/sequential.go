package loader

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/tensor"
)

// SequentialCalibration gives H to a compression that codes the block
// linears in a fixed order, each H computed from the model whose earlier
// linears are already coded (GPTQ's sequential protocol; eval/calib's
// Sequential). Compress calls Start once, then for every step of Steps, in
// order: Hessian for each weight of the step, codes it, decodes the
// section back and hands the decoded weights to Coded; the next step
// starts once every weight of this one is reported. Finish ends the run.
type SequentialCalibration interface {
	// Start begins a run for the coding setting described by key (codec,
	// trained codec, bits, ...). cached: the H of every step are known
	// already (a cached run), so Coded need not be called.
	Start(ctx context.Context, key string) (cached bool, err error)
	// Steps lists the block linears in coding order; the weights of one
	// step share an input and may be coded together.
	Steps() [][]string
	// Hessian returns H = XᵀX (n x n, row-major; callers must not modify
	// it) of the input of the named weight.
	Hessian(ctx context.Context, name string, n int) ([]float64, error)
	// Coded reports the weights [rows, cols] the decoder will produce for
	// the named weight.
	Coded(ctx context.Context, name string, w []float32) error
	// Finish is called after the last step (e.g. to save a cache entry).
	Finish() error
}

// codeSequential codes the block linears of src in the order seq gives,
// step by step, and returns their sections by name.
func codeSequential(ctx context.Context, src tensor.Source, lossy codec.Encoder, seq SequentialCalibration, key string, env codec.Env) (map[string]coded, error) {
	cached, err := seq.Start(ctx, key)
	if err != nil {
		return nil, err
	}
	decs := codec.NewDecoders(env)
	defer decs.Close()
	infos := src.Tensors()
	out := map[string]coded{}
	for _, step := range seq.Steps() {
		res := make([]coded, len(step))
		recon := make([][]float32, len(step))
		done := make(chan int, len(step))
		for i, name := range step {
			go func() {
				defer func() { done <- i }()
				ti, ok := tensor.Find(infos, name)
				if !ok || !IsBlockLinear(ti) || !ti.DType.IsFloat() {
					res[i].err = fmt.Errorf("compress: sequential calibration: %q is not a float block linear of the model", name)
					return
				}
				h := func(name string, n int) ([]float64, error) { return seq.Hessian(ctx, name, n) }
				res[i] = encodeTensor(ctx, src, nil, lossy, h, ti)
				if res[i].err != nil || cached {
					return
				}
				recon[i], res[i].err = decodeCoded(ctx, decs, res[i])
			}()
		}
		for range step {
			<-done
		}
		for i, name := range step {
			if res[i].err != nil {
				return nil, res[i].err
			}
			if !cached {
				if err := seq.Coded(ctx, name, recon[i]); err != nil {
					return nil, err
				}
			}
			out[name] = res[i]
		}
	}
	if err := seq.Finish(); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeCoded decodes a coded F32 section back to float32: what a reader
// of the file will get.
func decodeCoded(ctx context.Context, decs *codec.Decoders, c coded) ([]float32, error) {
	d := c.d
	b, err := decs.Decode(ctx, d.Codec, codec.Section{Name: d.Name, DType: d.DType, Shape: d.Shape, RawSize: d.RawSize, Params: d.Params}, c.payload, nil)
	if err != nil {
		return nil, fmt.Errorf("compress: decode %q back: %w", d.Name, err)
	}
	if d.DType != tensor.F32 || int64(len(b)) != 4*tensor.NumElements(d.Shape) {
		return nil, fmt.Errorf("compress: %q decodes to %d bytes of %s, want float32 %v", d.Name, len(b), d.DType, d.Shape)
	}
	w := make([]float32, len(b)/4)
	for i := range w {
		w[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return w, nil
}
