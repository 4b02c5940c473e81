//go:build cgo

package ortcodec

import (
	"context"
	"errors"
	"fmt"

	"github.com/nwc-project/nwc/loader/stage"
)

// DecodeMatrix decodes an nwc payload of a [m, n] tensor to float32.
func (c *Codec) DecodeMatrix(ctx context.Context, shape []int64, payload []byte) ([]float32, error) {
	return c.DecodeMatrixInto(ctx, shape, payload, nil)
}

// DecodeMatrixInto decodes an nwc payload of a [m, n] tensor into dst
// (reused when it holds m*n values) and returns it. Stage times go to
// stage.From(ctx).
func (c *Codec) DecodeMatrixInto(ctx context.Context, shape []int64, payload []byte, dst []float32) ([]float32, error) {
	return c.decodeMatrix(ctx, shape, payload, dst, false)
}

// DecodeMatrixTransposed decodes an nwc payload of a [m, n] tensor W into
// its transpose W^T [n, m] (reusing dst when it holds m*n values): the
// layout of the payload's chunks, so the output is written contiguously and
// a consumer that wants W^T (a MatMul's right operand) skips a transpose.
func (c *Codec) DecodeMatrixTransposed(ctx context.Context, shape []int64, payload []byte, dst []float32) ([]float32, error) {
	return c.decodeMatrix(ctx, shape, payload, dst, true)
}

func (c *Codec) decodeMatrix(ctx context.Context, shape []int64, payload []byte, dst []float32, transposed bool) ([]float32, error) {
	job, err := c.latentModel.newMatrixJob(stage.From(ctx), shape, payload, dst, transposed)
	if err != nil {
		return nil, err
	}
	defer job.release()
	if err := c.runJob(ctx, job); err != nil {
		return nil, err
	}
	return job.w, nil
}

// runJob runs the batches of job: through the decoder sessions (one batch
// each at a time, whole columns per batch when the session's batch holds
// one), or in Go for a KindGain codec.
func (c *Codec) runJob(ctx context.Context, job *matrixJob) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return ErrClosed
	}
	var err error
	if c.gain != nil && c.dec == nil {
		err = job.decodeGain(ctx)
	} else {
		if c.dec == nil {
			return fmt.Errorf("ortcodec: decode: %w: codec %s has no decoder", ErrInput, c.dir)
		}
		batch := c.opts.batch // a session's tensors hold this many chunks
		if batch >= job.kc {
			batch -= batch % job.kc
		}
		err = forBatches(ctx, job.n*job.kc, batch, cap(c.dec.free), func(ctx context.Context, lo, hi int) error {
			return c.dec.decodeBatch(ctx, job, lo, hi)
		})
	}
	if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("ortcodec: decode: %w", err)
	}
	return err
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
