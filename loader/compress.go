package loader

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/tensor"
)

// CompressOptions configures Compress. The zero value is valid.
type CompressOptions struct {
	// Codec names the codec: "lossless" (default), "rtn-g128", "rtn-row",
	// "gptq-g128" or "ecsq". Lossy codecs code the linear weights of the
	// transformer blocks (IsBlockLinear); every other tensor is kept
	// losslessly.
	Codec string
	// Bits is the bit width (rtn, gptq) or the target bits/weight (ecsq).
	Bits float64
	// Hessian gives the calibration statistics of each linear input for the
	// codecs that use them (gptq-g128, ecsq); nil means the identity.
	Hessian HessianFunc
	// FeedbackBlock is the LDLQ error-feedback block, in columns, of the
	// nwc and ecsq codecs (0: DefaultFeedbackBlock). nwc runs its encoder
	// once per block; smaller blocks feed back more often at the price of
	// more, smaller batches.
	FeedbackBlock int
	// Concurrency is the number of tensors coded at once; 0 means GOMAXPROCS.
	// Memory in flight is bounded by about 2 x Concurrency tensors (stored
	// bytes plus payload) plus the one being written.
	Concurrency int
	// Progress, when set, is called after each tensor is written with the
	// stored bytes done and in total.
	Progress func(done, total int64)
}

// DefaultFeedbackBlock is the LDLQ block of nwc and ecsq. Measured on
// smollm2-135m (nwc-w128d2-l300, --bits 4, 3.90 bits/weight, 4 windows x
// 512 of WikiText-2, mean KL vs the reference): block 128: 0.1146, block
// 16: 0.1014, block 1: 0.1053 (2.5x the encode time of 16). docs/QUANTIZERS.md.
const DefaultFeedbackBlock = 16

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
	Seconds       float64      `json:"seconds"`
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
		opts.Codec = "lossless"
	}
	lossy, err := newLinearCoder(opts.Codec, opts.Bits, opts.FeedbackBlock)
	if err != nil {
		return nil, err
	}
	if lossy != nil {
		defer lossy.close()
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = runtime.GOMAXPROCS(0)
	}
	ll, err := codec.NewLossless()
	if err != nil {
		return nil, err
	}
	defer ll.Close()
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
		id, params, payload, err := ll.Encode(tensor.U8, a.Data)
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
				res <- encodeTensor(ctx, src, ll, lossy, opts.Hessian, ti)
			}(ti)
		}
	}()

	sum := &Summary{Output: path, Codec: opts.Codec}
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
	if sum.Weights > 0 {
		sum.BitsPerWeight = 8 * float64(sum.FileBytes) / float64(sum.Weights)
	}
	sum.Seconds = time.Since(start).Seconds()
	return sum, nil
}

func encodeTensor(ctx context.Context, src tensor.Source, ll *codec.Lossless, lossy linearCoder, hess HessianFunc, ti tensor.Info) coded {
	if lossy != nil && IsBlockLinear(ti) && ti.DType.IsFloat() {
		w, err := src.ReadFloat32(ti.Name, nil)
		if err != nil {
			return coded{err: err}
		}
		rows, cols := int(ti.Shape[0]), int(ti.Shape[1])
		var h []float64
		if hess != nil && lossy.usesH() {
			if h, err = hess(ti.Name, cols); err != nil {
				return coded{err: fmt.Errorf("compress: tensor %q: calibration: %w", ti.Name, err)}
			}
		}
		id, params, payload, err := lossy.encode(ctx, w, rows, cols, h)
		if err != nil {
			return coded{err: fmt.Errorf("compress: tensor %q: %w", ti.Name, err)}
		}
		return coded{d: container.Descriptor{Kind: container.KindTensor, Name: ti.Name, DType: tensor.F32,
			Shape: ti.Shape, Codec: id, Params: params, RawSize: 4 * int64(len(w))}, payload: payload}
	}
	raw, err := src.ReadRaw(ti.Name, nil)
	if err != nil {
		return coded{err: err}
	}
	if int64(len(raw)) != ti.Size {
		return coded{err: fmt.Errorf("compress: tensor %q: source gave %d bytes, want %d", ti.Name, len(raw), ti.Size)}
	}
	id, params, payload, err := ll.Encode(ti.DType, raw)
	if err != nil {
		return coded{err: fmt.Errorf("compress: tensor %q: %w", ti.Name, err)}
	}
	return coded{d: container.Descriptor{Kind: container.KindTensor, Name: ti.Name, DType: ti.DType,
		Shape: ti.Shape, Codec: id, Params: params, RawSize: ti.Size}, payload: payload}
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
