// Package stage measures where decode time goes: a Times value travels in a
// context.Context (With, From) and every stage of decoding a tensor (reading
// its section, checking its CRC, entropy decoding, the decoder network,
// rescaling into the output) adds the time it took. A context without one
// costs a nil check per stage. Times is safe for concurrent use; with
// parallel decoders the stage sums are CPU-side busy times, not wall time.
package stage

import (
	"context"
	"sync/atomic"
	"time"
)

// Stage is one step of decoding a tensor.
type Stage int

// The stages, in pipeline order.
const (
	Read     Stage = iota // reading the section bytes from the file
	Checksum              // CRC-32C of the section
	Entropy               // rANS / zstd / bit unpacking to integers or stored bytes
	Network               // the decoder network (ONNX Runtime) or the latent gains
	Rescale               // dequantize, row scales, conversion into the output bytes
	NumStages
)

var names = [NumStages]string{"read", "checksum", "entropy", "network", "rescale"}

// String returns the stage's name ("read", "checksum", ...).
func (s Stage) String() string {
	if s < 0 || s >= NumStages {
		return "unknown"
	}
	return names[s]
}

// Times accumulates time and items (weights, bytes) per stage.
type Times struct {
	ns    [NumStages]atomic.Int64
	items [NumStages]atomic.Int64
}

type key struct{}

// With returns a context that carries t.
func With(ctx context.Context, t *Times) context.Context { return context.WithValue(ctx, key{}, t) }

// From returns the Times in ctx, or nil.
func From(ctx context.Context) *Times {
	t, _ := ctx.Value(key{}).(*Times)
	return t
}

// Add adds d (and n items) to stage s. A nil Times does nothing.
func (t *Times) Add(s Stage, d time.Duration, n int64) {
	if t == nil || s < 0 || s >= NumStages {
		return
	}
	t.ns[s].Add(int64(d))
	t.items[s].Add(n)
}

// Since adds the time since start to stage s and returns now, so stages can
// be chained: t0 = st.Since(stage.Read, t0, n). A nil Times returns the zero
// time without reading the clock.
func (t *Times) Since(s Stage, start time.Time, n int64) time.Time {
	if t == nil {
		return time.Time{}
	}
	now := time.Now()
	t.Add(s, now.Sub(start), n)
	return now
}

// Start returns time.Now(), or the zero time for a nil Times.
func (t *Times) Start() time.Time {
	if t == nil {
		return time.Time{}
	}
	return time.Now()
}

// Duration returns the time accumulated by stage s.
func (t *Times) Duration(s Stage) time.Duration {
	if t == nil || s < 0 || s >= NumStages {
		return 0
	}
	return time.Duration(t.ns[s].Load())
}

// Items returns the items (weights or bytes, as the stage counts them)
// accumulated by stage s.
func (t *Times) Items(s Stage) int64 {
	if t == nil || s < 0 || s >= NumStages {
		return 0
	}
	return t.items[s].Load()
}

// Total returns the sum over all stages.
func (t *Times) Total() time.Duration {
	var d time.Duration
	for s := Stage(0); s < NumStages; s++ {
		d += t.Duration(s)
	}
	return d
}
