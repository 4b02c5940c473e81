package loader

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/codec/lossless"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/tensor"
)

// CompressOptions configures Compress. The zero value is valid.
type CompressOptions struct {
	// Codec names a registered codec (codec.Names(): "lossless", "nwc",
	// "nwc:NAME", "rtn-g128", "gptq-g128", "ecsq", ...). Lossy codecs code
	// the linear weights of the transformer blocks (IsBlockLinear); every
	// other tensor is kept losslessly. Required: there is no default, so
	// that a lossy setting never silently writes a lossless file.
	Codec string
	// Bits is the bit width (rtn, gptq) or the target bits/weight (ecsq,
	// nwc); see each codec's Doc.
	Bits float64
	// Hessian gives the calibration statistics of each linear input for the
	// codecs that use them (codec.Codec.Calibration); nil means the identity.
	Hessian HessianFunc
	// Sequential, when set (and the codec uses calibration), replaces
	// Hessian: the block linears are coded first, in its order, each with
	// the H it computes from the model coded so far (SequentialCalibration).
	Sequential SequentialCalibration
	// FeedbackBlock is the LDLQ error-feedback block, in columns, of the
	// nwc and ecsq codecs (0: ldlq.FeedbackBlock, 16). nwc runs its encoder
	// once per block; smaller blocks feed back more often at the price of
	// more, smaller batches.
	FeedbackBlock int
	// UniformLevels: the nwc codec's ablation with every column at quality
	// level 0 (codec.Config.UniformLevels).
	UniformLevels bool
	// TuneRowScales: closed-form row-scale tuning after coding, nwc and
	// ecsq (codec.Config.TuneRowScales).
	TuneRowScales bool
	// Env says where trained codecs live and how to run ONNX Runtime.
	Env codec.Env
	// Concurrency is the number of tensors coded at once; 0 means GOMAXPROCS.
	// Memory in flight is bounded by about 2 x Concurrency tensors (stored
	// bytes plus payload) plus the one being written.
	Concurrency int
	// Progress, when set, is called after each tensor is written with the
	// stored bytes done and in total.
	Progress func(done, total int64)
}

// HessianFunc returns H = X^T X (n x n, row-major) of the input of the named
// linear weight, or nil for the identity (no calibration data).
type HessianFunc func(name string, n int) ([]float64, error)

// TensorStat reports how one tensor was coded.
type TensorStat struct {
	Name         string  `json:"name"`
	DType        string  `json:"dtype"`
	Shape        []int64 `json:"shape"`
	Codec        string  `json:"codec"`
	RawBytes     int64   `json:"raw_bytes"`
	SectionBytes int64   `json:"section_bytes"`
	BitsPerW     float64 `json:"bits_per_weight"`
}

// Summary reports a finished compression.
type Summary struct {
	Output        string       `json:"output"`
	Codec         string       `json:"codec"`
	Tensors       []TensorStat `json:"tensors"`
	Weights       int64        `json:"weights"`
	RawBytes      int64        `json:"raw_bytes"`
	FileBytes     int64        `json:"file_bytes"`
	BitsPerWeight float64      `json:"bits_per_weight"` // whole file, all overhead counted
	// LinearBitsPerWeight counts only the sections of the transformer
	// blocks' linear weights (what the lossy codecs code).
	LinearBitsPerWeight float64 `json:"linear_bits_per_weight"`
	Seconds             float64 `json:"seconds"`
}

type coded struct {
	d       container.Descriptor
	payload []byte
	err     error
}

// Compress codes every tensor and asset of src into a new .nwc file at path
// (written atomically). Tensors are coded in parallel and written in source
// order.
func Compress(ctx context.Context, src tensor.Source, path string, opts CompressOptions) (*Summary, error) {
	start := time.Now()
	if opts.Codec == "" {
		return nil, fmt.Errorf("compress: no codec given (one of %s)", strings.Join(codec.Names(), ", "))
	}
	spec, arg, err := codec.Lookup(opts.Codec)
	if err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	cfg := codec.Config{Env: opts.Env, Arg: arg, Bits: opts.Bits, FeedbackBlock: opts.FeedbackBlock, UniformLevels: opts.UniformLevels, TuneRowScales: opts.TuneRowScales}
	if err := spec.Check(cfg); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	enc, err := spec.NewEncoder(cfg)
	if err != nil {
		return nil, fmt.Errorf("compress: %s: %w", opts.Codec, err)
	}
	defer codec.CloseEncoder(enc)
	if opts.Concurrency <= 0 {
		opts.Concurrency = runtime.GOMAXPROCS(0)
	}
	ll, err := lossless.New()
	if err != nil {
		return nil, err
	}
	defer ll.Close()
	var lossy codec.Encoder
	if spec.Lossy {
		lossy = enc
	}
	hess := opts.Hessian
	if !spec.Calibration {
		hess = nil
	}
	codecName := opts.Codec
	if s, ok := enc.(fmt.Stringer); ok && arg == "" {
		codecName += ":" + s.String() // the trained codec nwc picked
	}
	var pre map[string]coded // block linears coded by the sequential protocol
	if spec.Calibration && lossy != nil && opts.Sequential != nil {
		key := fmt.Sprintf("codec=%s bits=%g feedback=%d", codecName, opts.Bits, opts.FeedbackBlock)
		if opts.UniformLevels {
			key += " uniform-levels"
		}
		if opts.TuneRowScales {
			key += " tune-row-scales"
		}
		if pre, err = codeSequential(ctx, src, lossy, opts.Sequential, key, opts.Env); err != nil {
			return nil, err
		}
		hess = func(name string, _ int) ([]float64, error) {
			return nil, fmt.Errorf("not covered by the sequential calibration")
		}
	}
	w, err := container.Create(path)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	for _, a := range src.Assets() {
		id, params, payload, err := ll.EncodeBytes(tensor.U8, a.Data)
		if err != nil {
			return nil, fmt.Errorf("compress: asset %q: %w", a.Name, err)
		}
		d := container.Descriptor{Kind: container.KindAsset, Name: a.Name, DType: tensor.U8,
			Shape: []int64{int64(len(a.Data))}, Codec: id, Params: params, RawSize: int64(len(a.Data))}
		if err := w.WriteSection(d, payload); err != nil {
			return nil, err
		}
	}

	infos := src.Tensors()
	var total int64
	for _, ti := range infos {
		total += ti.Size
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Ordered parallel output: one result channel per tensor, queued in
	// source order; the queue's capacity bounds the tensors in flight.
	queue := make(chan chan coded, opts.Concurrency)
	sem := make(chan struct{}, opts.Concurrency)
	go func() {
		defer close(queue)
		for _, ti := range infos {
			res := make(chan coded, 1)
			select {
			case queue <- res:
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				res <- coded{err: ctx.Err()}
				return
			}
			go func(ti tensor.Info) {
				defer func() { <-sem }()
				if c, ok := pre[ti.Name]; ok {
					res <- c
					return
				}
				res <- encodeTensor(ctx, src, ll, lossy, hess, ti)
			}(ti)
		}
	}()

	sum := &Summary{Output: path, Codec: codecName}
	var done int64
	var firstErr error
	for res := range queue {
		c := <-res
		if firstErr != nil {
			continue // drain
		}
		if c.err == nil {
			c.err = ctx.Err()
		}
		if c.err != nil {
			firstErr = c.err
			cancel()
			continue
		}
		if err := w.WriteSection(c.d, c.payload); err != nil {
			firstErr = err
			cancel()
			continue
		}
		n := tensor.NumElements(c.d.Shape)
		sum.Weights += n
		sum.RawBytes += c.d.RawSize
		done += c.d.RawSize
		if opts.Progress != nil {
			opts.Progress(done, total)
		}
	}
	if firstErr == nil {
		firstErr = ctx.Err() // the producer may have stopped early
	}
	if firstErr != nil {
		return nil, firstErr
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	ok = true
	// Sizes come from the file on disk.
	r, err := container.Open(path)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	sum.FileBytes = r.Size()
	sum.Tensors = SectionStats(r)
	sum.LinearBitsPerWeight = LinearBitsPerWeight(r)
	if sum.Weights > 0 {
		sum.BitsPerWeight = 8 * float64(sum.FileBytes) / float64(sum.Weights)
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

func encodeTensor(ctx context.Context, src tensor.Source, ll *lossless.Lossless, lossy codec.Encoder, hess HessianFunc, ti tensor.Info) coded {
	in := codec.Input{Info: ti}
	enc := codec.Encoder(ll)
	var err error
	if lossy != nil && IsBlockLinear(ti) && ti.DType.IsFloat() {
		enc = lossy
		if in.Weights, err = src.ReadFloat32(ti.Name, nil); err != nil {
			return coded{err: err}
		}
		if hess != nil {
			if in.H, err = hess(ti.Name, int(ti.Shape[1])); err != nil {
				return coded{err: fmt.Errorf("compress: tensor %q: calibration: %w", ti.Name, err)}
			}
		}
		in.Info.DType, in.Info.Size = tensor.F32, 4*int64(len(in.Weights))
	} else {
		if in.Raw, err = src.ReadRaw(ti.Name, nil); err != nil {
			return coded{err: err}
		}
		if int64(len(in.Raw)) != ti.Size {
			return coded{err: fmt.Errorf("compress: tensor %q: source gave %d bytes, want %d", ti.Name, len(in.Raw), ti.Size)}
		}
	}
	out, err := enc.Encode(ctx, in)
	if err != nil {
		return coded{err: fmt.Errorf("compress: tensor %q: %w", ti.Name, err)}
	}
	return coded{d: container.Descriptor{Kind: container.KindTensor, Name: ti.Name, DType: out.DType,
		Shape: ti.Shape, Codec: out.ID, Params: out.Params, RawSize: in.Info.Size}, payload: out.Payload}
}

// SectionStats reports the coded size of every tensor section of a container.
func SectionStats(r *container.Reader) []TensorStat {
	var out []TensorStat
	for _, e := range r.Entries() {
		if e.Kind != container.KindTensor {
			continue
		}
		n := tensor.NumElements(e.Shape)
		st := TensorStat{Name: e.Name, DType: e.DType.String(), Shape: e.Shape, Codec: codec.Name(e.Codec),
			RawBytes: e.RawSize, SectionBytes: e.SectionSize()}
		if n > 0 {
			st.BitsPerW = 8 * float64(st.SectionBytes) / float64(n)
		}
		out = append(out, st)
	}
	return out
}

// LinearBitsPerWeight is the bits/weight of the transformer blocks' linear
// weights in a container: their section bytes (payload, parameters, header,
// checksums) over their weights; 0 when there are none.
func LinearBitsPerWeight(r *container.Reader) float64 {
	var bytes, n int64
	for _, e := range r.Entries() {
		if ti := e.Info(); e.Kind == container.KindTensor && IsBlockLinear(ti) {
			bytes += e.SectionSize()
			n += ti.NumElements()
		}
	}
	if n == 0 {
		return 0
	}
	return 8 * float64(bytes) / float64(n)
}
