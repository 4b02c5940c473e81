//go:build cgo

package ortcodec

import (
	"fmt"

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
}

// Defaults (see each option).
const (
	DefaultBatch = 16384
	MaxBatch     = 1 << 20
	MaxSessions  = 256
)

func defaultOptions() options {
	return options{threads: 0, sessions: 1, batch: DefaultBatch, provider: ortenv.ProviderCPU}
}

// WithThreads sets the intra-op threads of each ONNX Runtime session.
// Default 0: ONNX Runtime's own default (one per physical core).
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
// the codec keeps; at most that many batches run at once. Default 1 (one
// session already uses all cores through its intra-op threads; more sessions
// help on GPUs and with WithThreads(1) on many-core CPUs).
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
