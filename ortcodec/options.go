//go:build cgo

package ortcodec

import (
	"fmt"
	"runtime"

	"github.com/nwc-project/nwc/internal/ortenv"
)

// Option configures Load. Options are validated when Load runs; an invalid
// argument makes Load fail.
type Option func(*options) error

type options struct {
	threads  int
	sessions int
	batch    int
	provider string
	library  string
	// host: the host created the ONNX Runtime environment (ortenv.InitHost).
	host bool
	// decodeOnly: no encoder sessions.
	decodeOnly bool
	// forceORT: run a KindGain codec's ONNX graphs through ONNX Runtime
	// instead of Go (tests compare the two).
	forceORT bool
}

// Defaults (see each option).
const (
	DefaultBatch = 16384
	MaxBatch     = 1 << 20
	MaxSessions  = 256
)

func defaultOptions() options {
	return options{threads: 0, sessions: 0, batch: DefaultBatch, provider: ortenv.ProviderCPU}
}

// WithThreads sets the intra-op threads of each ONNX Runtime session.
// Default 0: 1 when the session count is automatic (WithSessions not
// given), else ONNX Runtime's own default (one per physical core).
func WithThreads(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("ortcodec: threads %d < 0", n)
		}
		o.threads = n
		return nil
	}
}

// WithSessions sets how many sessions of each network (encoder and decoder)
// the codec keeps; at most that many batches run at once. Default: on the
// CPU one single-threaded session per core (GOMAXPROCS / threads sessions
// when WithThreads sets threads), so a core's Go work (dequantizing,
// rescaling) overlaps another core's network run and no intra-op thread
// pool spins; 2 on CUDA. See `nwc bench decode --sweep`.
func WithSessions(n int) Option {
	return func(o *options) error {
		if n < 1 || n > MaxSessions {
			return fmt.Errorf("ortcodec: sessions %d outside [1, %d]", n, MaxSessions)
		}
		o.sessions = n
		return nil
	}
}

// WithBatch sets the number of 16-value chunks per Run. Each session owns
// input and output tensors of this size (128*batch bytes plus 8*batch for
// the levels). Default DefaultBatch (16384).
func WithBatch(n int) Option {
	return func(o *options) error {
		if n < 1 || n > MaxBatch {
			return fmt.Errorf("ortcodec: batch %d outside [1, %d]", n, MaxBatch)
		}
		o.batch = n
		return nil
	}
}

// WithProvider selects the execution provider: "cpu" (default) or "cuda".
// When CUDA cannot be used Load fails with an error wrapping
// ortenv.ErrProviderUnavailable and saying why, so the caller can fall back
// to "cpu" explicitly; there is no silent fallback.
func WithProvider(p string) Option {
	return func(o *options) error {
		n, err := ortenv.NormalizeProvider(p)
		if err != nil {
			return fmt.Errorf("ortcodec: %w", err)
		}
		o.provider = n
		return nil
	}
}

// WithLibrary names the ONNX Runtime shared library passed to ortenv.Init.
// Default "": ONNXRUNTIME_SHARED_LIBRARY_PATH or $NWC_CACHE/lib. The first
// Init of the process wins (see ortenv).
func WithLibrary(path string) Option {
	return func(o *options) error {
		o.library = path
		return nil
	}
}

// WithHostEnvironment uses the ONNX Runtime environment the host process
// created itself (for example through hugot or onnxruntime_go directly):
// nwc then neither initializes nor destroys it, and Load fails with
// ortenv.ErrNotInitialized when there is none.
func WithHostEnvironment() Option {
	return func(o *options) error {
		o.host = true
		return nil
	}
}

// WithDecoderOnly loads the decoder network only (what loading a .nwc file
// needs); Encode then fails.
func WithDecoderOnly() Option {
	return func(o *options) error {
		o.decodeOnly = true
		return nil
	}
}

// resolve fills the automatic session and thread counts.
func (o *options) resolve() {
	if o.sessions > 0 {
		return
	}
	if o.provider != ortenv.ProviderCPU {
		o.sessions = 2
		return
	}
	procs := runtime.GOMAXPROCS(0)
	if o.threads == 0 {
		o.threads = 1
	}
	o.sessions = max(1, min(MaxSessions, procs/o.threads))
}

// withORT makes a KindGain codec run its ONNX graphs through ONNX Runtime
// instead of Go (for tests that compare the two).
func withORT() Option {
	return func(o *options) error {
		o.forceORT = true
		return nil
	}
}
