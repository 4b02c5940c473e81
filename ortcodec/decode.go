//go:build cgo

package ortcodec

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/entropy"
)

// The decode pipeline of one nwc tensor [m, n] (DecodeMatrixInto):
//
//	payload --rANS, every stream in parallel--> integer latents, level-major (4 bytes/weight)
//	batches of chunks, one per worker (a decoder session, or a goroutine for KindGain):
//	  latents + medians --> the session's input tensor (no intermediate array)
//	  --> decoder network (ONNX Runtime) or the latent gains (Go)
//	  --> x row scale --> dst, the caller's float32 output
//
// The working set beyond the output is the payload (~bits/8 bytes per
// weight), the integer latents (4 bytes per weight), and the fixed batch
// buffers of the sessions: about 4.5 bytes per weight at 4 bits/weight.

// header is a parsed nwc payload header.
type header struct {
	m, n   int
	levels []uint8 // quality level of each input column
	scales []byte  // m fp16 row scales
	body   []byte  // the level streams
}

func parseHeader(shape []int64, payload []byte) (header, error) {
	if len(shape) != 2 || shape[0] <= 0 || shape[1] <= 0 || shape[0]%D != 0 || shape[0]*shape[1] > 1<<34 {
		return header{}, fmt.Errorf("%w: nwc shape %v", codec.ErrCorrupt, shape)
	}
	m, n := int(shape[0]), int(shape[1])
	side := 1 + 2*m + (n+3)/4
	if len(payload) < side || payload[0] != nwcPayloadVersion {
		return header{}, fmt.Errorf("%w: nwc payload of %d bytes (header needs %d)", codec.ErrCorrupt, len(payload), side)
	}
	h := header{m: m, n: n, levels: make([]uint8, n), scales: payload[1 : 1+2*m], body: payload[side:]}
	lv := payload[1+2*m:]
	for j := range h.levels {
		h.levels[j] = lv[j/4] >> (2 * (j % 4)) & 3
	}
	return h, nil
}

// DecodeMatrix decodes an nwc payload of a [m, n] tensor to float32.
func (c *Codec) DecodeMatrix(ctx context.Context, shape []int64, payload []byte) ([]float32, error) {
	return c.DecodeMatrixInto(ctx, shape, payload, nil)
}

// DecodeMatrixInto decodes an nwc payload of a [m, n] tensor into dst
// (reused when it holds m*n values) and returns it. Stage times go to
// stage.From(ctx).
func (c *Codec) DecodeMatrixInto(ctx context.Context, shape []int64, payload []byte, dst []float32) ([]float32, error) {
	st := stage.From(ctx)
	t0 := st.Start()
	h, err := parseHeader(shape, payload)
	if err != nil {
		return nil, err
	}
	m, n, kc := h.m, h.n, h.m/D
	var cnt [NumLevels]int
	for _, l := range h.levels {
		cnt[l] += kc
	}
	// Entropy decoding: level l's symbols at syms[base[l]:], in the order
	// of its columns.
	syms := make([]int32, m*n)
	var base [NumLevels + 1]int
	body := h.body
	for l := 0; l < NumLevels; l++ {
		base[l+1] = base[l] + D*cnt[l]
		sz, k := binary.Uvarint(body)
		if k <= 0 || sz > uint64(len(body)-k) {
			return nil, fmt.Errorf("%w: level %d stream length", entropy.ErrCorrupt, l)
		}
		if _, err := entropy.DecodeStreams(c.levels[l], body[k:k+int(sz)], D*cnt[l], syms[base[l]:base[l+1]:base[l+1]], 0); err != nil {
			return nil, fmt.Errorf("ortcodec: level %d: %w", l, err)
		}
		body = body[k+int(sz):]
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last level", entropy.ErrCorrupt, len(body))
	}
	t0 = st.Since(stage.Entropy, t0, int64(m*n))
	colOff := make([]int, n)
	pos := base
	for j, l := range h.levels {
		colOff[j] = pos[l]
		pos[l] += kc * D
	}
	r := make([]float32, m)
	for i := range r {
		r[i] = tensor.F16ToF32(binary.LittleEndian.Uint16(h.scales[2*i:]))
	}
	if cap(dst) < m*n {
		dst = make([]float32, m*n)
	}
	dst = dst[:m*n]
	st.Since(stage.Rescale, t0, 0)
	job := &matrixJob{c: c, st: st, m: m, n: n, kc: kc, levels: h.levels, syms: syms, colOff: colOff, r: r, w: dst}
	if err := c.runJob(ctx, job); err != nil {
		return nil, err
	}
	return dst, nil
}

// matrixJob is one tensor's batches.
type matrixJob struct {
	c      *Codec
	st     *stage.Times
	m, n   int
	kc     int // chunks per column
	levels []uint8
	syms   []int32
	colOff []int
	r      []float32
	w      []float32
}

// A batch is a range [lo, hi) of chunks in the column-major chunk order of
// the payload (chunk i holds rows 16(i%kc).. of column i/kc), which is also
// the order of the network's batch tensors. Batches are whole columns when
// the batch size allows, so store and gainBatch can write every row in
// consecutive columns.

// fill dequantizes chunks [lo, hi) into in and their levels into q.
func (j *matrixJob) fill(lo, hi int, in []float32, q []int64) {
	med := &j.c.med
	for i := lo; i < hi; i++ {
		col, k := i/j.kc, i%j.kc
		l := j.levels[col]
		s := j.syms[j.colOff[col]+k*D:][:D]
		y := in[(i-lo)*D:][:D]
		md := &med[l]
		for t := range D {
			y[t] = float32(s[t]) + md[t]
		}
		q[i-lo] = int64(l)
	}
}

// store writes the decoded chunks [lo, hi) (x in chunk order) times the
// row scales into w, row block by row block.
func (j *matrixJob) store(lo, hi int, x []float32) {
	n, kc := j.n, j.kc
	for k := 0; k < kc; k++ {
		rs := j.r[k*D:][:D]
		w := j.w[k*D*n:]
		for col := lo / kc; col <= (hi-1)/kc; col++ {
			i := col*kc + k
			if i < lo || i >= hi {
				continue
			}
			xs := x[(i-lo)*D:][:D]
			for t := range D {
				w[t*n+col] = xs[t] * rs[t]
			}
		}
	}
}

// gainBatch decodes chunks [lo, hi) of a KindGain codec in one pass:
// latent -> y_hat -> gains -> row scale, row block by row block.
func (j *matrixJob) gainBatch(lo, hi int) {
	g, med, n, kc := j.c.gain, &j.c.med, j.n, j.kc
	for k := 0; k < kc; k++ {
		rs := j.r[k*D:][:D]
		w := j.w[k*D*n:]
		for col := lo / kc; col <= (hi-1)/kc; col++ {
			i := col*kc + k
			if i < lo || i >= hi {
				continue
			}
			l := j.levels[col]
			s := j.syms[j.colOff[col]+k*D:][:D]
			md, dg := &med[l], &g.dec[l]
			for t := range D {
				y := float32(s[t]) + md[t]
				x := float32(float32(y*dg[t])*g.std) + g.mean
				w[t*n+col] = x * rs[t]
			}
		}
	}
}

// runJob runs the batches of job on the codec's workers: the decoder
// sessions (one batch each at a time), or GOMAXPROCS goroutines for a
// KindGain codec.
func (c *Codec) runJob(ctx context.Context, job *matrixJob) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	total := job.n * job.kc
	batch := c.opts.batch // a session's tensors hold this many chunks
	workers := runtime.GOMAXPROCS(0)
	if c.gain == nil {
		if c.dec == nil {
			return fmt.Errorf("ortcodec: decode: %w: codec %s has no decoder", ErrInput, c.dir)
		}
		workers = cap(c.dec.free)
	} else {
		batch = 16 * job.kc // 16 columns: a 64-byte line of every row
	}
	if batch >= job.kc {
		batch -= batch % job.kc // whole columns
	}
	nb := (total + batch - 1) / batch
	workers = max(1, min(workers, nb))
	var (
		next  atomic.Int64
		once  sync.Once
		first error
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := func() {
		defer wg.Done()
		for {
			b := int(next.Add(1) - 1)
			if b >= nb || ctx.Err() != nil {
				return
			}
			lo, hi := b*batch, min(total, (b+1)*batch)
			var err error
			if c.gain != nil {
				t0 := job.st.Start()
				job.gainBatch(lo, hi)
				job.st.Since(stage.Network, t0, int64((hi-lo)*D))
			} else {
				err = c.dec.decodeBatch(ctx, job, lo, hi)
			}
			if err != nil {
				once.Do(func() { first = err; cancel() })
				return
			}
		}
	}
	wg.Add(workers)
	for range workers - 1 {
		go work()
	}
	work()
	wg.Wait()
	if first != nil {
		if ctx.Err() != nil && errors.Is(first, context.Canceled) {
			return first
		}
		return fmt.Errorf("ortcodec: decode: %w", first)
	}
	return ctx.Err()
}

// decodeBatch runs chunks [lo, hi) of job through a free session: fill its
// input tensors in place, run, rescale from its output tensor.
func (p *pool) decodeBatch(ctx context.Context, job *matrixJob, lo, hi int) error {
	st := job.st
	return p.runWith(ctx, lo, hi, st,
		func(in []float32, q []int64) {
			t0 := st.Start()
			job.fill(lo, hi, in, q)
			st.Since(stage.Rescale, t0, 0)
		},
		func(out []float32) {
			t0 := st.Start()
			job.store(lo, hi, out)
			st.Since(stage.Rescale, t0, int64((hi-lo)*D))
		})
}
