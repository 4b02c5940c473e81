// Package serve is an OpenAI-compatible HTTP server for one model:
// GET /v1/models, POST /v1/completions, POST /v1/chat/completions
// (JSON, or server-sent events with stream: true) and GET /health, on
// net/http alone.
//
// A Server runs up to Options.Parallel generations at once, each with its
// own key-value cache on the one shared model (the engine's decode steps
// of different requests run concurrently on ONNX Runtime's session and
// interleave step by step); up to Options.MaxQueue more requests wait for a
// slot, and a request beyond that gets 429. A request's generation runs
// under the request's context: it stops when the client disconnects.
// Serve shuts down gracefully when its context ends.
//
// The model is behind the Engine interface; NewLlamaEngine (cgo) is the
// one over plugin/llama, plugin/tokenizer and plugin/chat.
package serve

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/nwc-project/nwc/plugin/chat"
)

// Params are a generation's sampling and stopping settings.
type Params struct {
	MaxTokens   int     // > 0
	Temperature float64 // 0: greedy
	TopP        float64 // (0, 1]
	Seed        uint64
	Stop        []string // stop strings (the text is cut before one)
}

// Output is what a generation produced.
type Output struct {
	Text             string
	CompletionTokens int
	FinishReason     string // "stop" (stop token or string) or "length"
}

// Engine is the model behind a Server. Its methods are called from many
// goroutines at once.
type Engine interface {
	// Encode returns the token ids of prompt text.
	Encode(text string) ([]int32, error)
	// RenderChat renders a conversation with the model's chat template,
	// followed by the opening of the assistant's turn. It returns an error
	// wrapping chat.ErrNoTemplate when the model has none.
	RenderChat(msgs []chat.Message) (string, error)
	// ContextLength is the most tokens a sequence (prompt and generated)
	// may hold; 0 when unknown.
	ContextLength() int
	// Vocab is the number of token ids.
	Vocab() int
	// Generate continues prompt. onText receives the text as it is
	// settled (stop strings held back and cut); an error from it ends the
	// generation and is returned. When ctx ends, Generate stops between
	// steps (or during one) and returns an error wrapping ctx.Err().
	Generate(ctx context.Context, prompt []int32, p Params, onText func(string) error) (Output, error)
}

// Options configure a Server.
type Options struct {
	// ModelID is the model's name in requests and /v1/models.
	ModelID string
	// Parallel is the number of generations that run at once (<= 0: 1).
	Parallel int
	// MaxQueue is the number of requests that may wait for a slot beyond
	// Parallel (< 0: 0; 0 means none wait: a request finding every slot
	// busy gets 429).
	MaxQueue int
	// DefaultMaxTokens bounds a generation whose request sets no
	// max_tokens (<= 0: 256); the context length bounds it too.
	DefaultMaxTokens int
	// ContextLength overrides Engine.ContextLength when > 0.
	ContextLength int
	// Logf receives one line per request and errors (nil: log.Printf).
	Logf func(format string, args ...any)
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

// Stats are a Server's counters.
type Stats struct {
	Active    int64 `json:"active"`    // generations running
	Queued    int64 `json:"queued"`    // requests waiting for a slot
	Completed int64 `json:"completed"` // generations that ended normally
	Cancelled int64 `json:"cancelled"` // generations stopped by the client going away or shutdown
	Rejected  int64 `json:"rejected"`  // 429s
	Invalid   int64 `json:"invalid"`   // 400s
	Failed    int64 `json:"failed"`    // engine errors
	Tokens    int64 `json:"tokens"`    // completion tokens generated
}

// Server serves one Engine. Create it with New; it is an http.Handler.
type Server struct {
	eng     Engine
	opts    Options
	created int64
	mux     *http.ServeMux
	admit   chan struct{} // capacity Parallel+MaxQueue: admitted requests
	slots   chan struct{} // capacity Parallel: running generations

	active, queued, completed, cancelled, rejected, invalidN, failed, tokens atomic.Int64
}

// New returns a server for eng.
func New(eng Engine, opts Options) *Server {
	if opts.Parallel <= 0 {
		opts.Parallel = 1
	}
	if opts.MaxQueue < 0 {
		opts.MaxQueue = 0
	}
	if opts.DefaultMaxTokens <= 0 {
		opts.DefaultMaxTokens = 256
	}
	if opts.ContextLength <= 0 {
		opts.ContextLength = eng.ContextLength()
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ModelID == "" {
		opts.ModelID = "model"
	}
	s := &Server{
		eng: eng, opts: opts, created: opts.Now().Unix(), mux: http.NewServeMux(),
		admit: make(chan struct{}, opts.Parallel+opts.MaxQueue),
		slots: make(chan struct{}, opts.Parallel),
	}
	s.mux.HandleFunc("GET /health", s.handleHealth)
	s.mux.HandleFunc("GET /v1/models", s.handleModels)
	s.mux.HandleFunc("GET /v1/models/{id}", s.handleModel)
	s.mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) { s.handleGenerate(w, r, false) })
	s.mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) { s.handleGenerate(w, r, true) })
	for path, allow := range map[string]string{"/health": "GET", "/v1/models": "GET", "/v1/completions": "POST", "/v1/chat/completions": "POST"} {
		s.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Type: typeInvalid, Code: strp("method_not_allowed"),
				Message: fmt.Sprintf("%s %s: use %s.", r.Method, r.URL.Path, allow)})
		})
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{Status: http.StatusNotFound, Message: fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path),
			Type: typeInvalid, Code: strp("unknown_url")})
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{Active: s.active.Load(), Queued: s.queued.Load(), Completed: s.completed.Load(), Cancelled: s.cancelled.Load(),
		Rejected: s.rejected.Load(), Invalid: s.invalidN.Load(), Failed: s.failed.Load(), Tokens: s.tokens.Load()}
}

// ModelID returns the model's name in the API.
func (s *Server) ModelID() string { return s.opts.ModelID }

// Serve serves HTTP on ln until ctx ends, then shuts down gracefully: it
// stops accepting connections and waits up to grace for the requests in
// flight to finish; then it cancels their generations (their contexts end)
// and waits for the handlers to return. It returns nil after a shutdown
// that ctx started.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 30 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          log.New(logWriter(s.opts.Logf), "", 0),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.opts.Logf("serve: shutting down (waiting up to %s for %d requests in flight)", grace, s.active.Load()+s.queued.Load())
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.opts.Logf("serve: grace period over: cancelling %d generations", s.active.Load()+s.queued.Load())
		cancelAll()
		// The handlers return once their generations see the cancellation.
		wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer wcancel()
		err = hs.Shutdown(wctx)
	}
	if e := <-errc; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("serve: shutdown: %w", err)
	}
	return nil
}

// logWriter adapts Logf to the io.Writer http.Server's ErrorLog needs.
type logWriter func(format string, args ...any)

func (f logWriter) Write(p []byte) (int, error) {
	f("%s", string(p))
	return len(p), nil
}

// acquire admits a request and waits for a generation slot. It returns
// the release function, or an error: a 429 *apiError when the queue is
// full, or ctx's error when the client left while waiting.
func (s *Server) acquire(ctx context.Context) (func(), error) {
	select {
	case s.admit <- struct{}{}:
	default:
		s.rejected.Add(1)
		return nil, &apiError{Status: http.StatusTooManyRequests, Type: typeRate, Code: strp(codeRate),
			Message: fmt.Sprintf("The server is busy: %d requests running and %d waiting (the most it takes). Retry later.", s.opts.Parallel, s.opts.MaxQueue)}
	}
	s.queued.Add(1)
	select {
	case s.slots <- struct{}{}:
		s.queued.Add(-1)
		s.active.Add(1)
		return func() {
			s.active.Add(-1)
			<-s.slots
			<-s.admit
		}, nil
	case <-ctx.Done():
		s.queued.Add(-1)
		<-s.admit
		return nil, ctx.Err()
	}
}
