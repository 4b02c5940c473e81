package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/container"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
)

// The benchmarks measure each configuration in a child process, a re-exec
// of this binary with the hidden --child flag, so that the peak RSS the
// kernel reports for it (rusage ru_maxrss) belongs to that configuration
// alone and no cache, pool or heap carries over from the previous one. The
// child prints one JSON object on stdout; everything else goes to stderr.

// childFlag is the hidden flag that makes `nwc bench decode|load` measure
// one configuration and print its JSON result.
const childFlag = "child"

// selfExe is the binary children are started from (tests replace it).
var selfExe = os.Executable

// childEnv is added to every child's environment (tests use it to make the
// test binary behave as nwc).
var childEnv []string

// runChild starts this binary with args, waits, decodes its stdout (one
// JSON object) into out and returns the child's peak RSS in bytes from
// rusage (0 where the platform does not report it; on Linux at least the
// parent's peak, so children report their own, selfPeakRSS).
func runChild(ctx context.Context, args []string, out any) (int64, error) {
	exe, err := selfExe()
	if err != nil {
		return 0, fmt.Errorf("bench: child: %w", err)
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	cmd.Env = append(os.Environ(), childEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	rss := maxRSS(cmd.ProcessState)
	if err != nil {
		return rss, &childError{args: args, err: err, stderr: tail(stderr.String(), 2000)}
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		return rss, fmt.Errorf("bench: child %s: its output is not a result (%w): %s", strings.Join(args, " "), err, tail(stdout.String(), 500))
	}
	return rss, nil
}

// childError is a child that failed: what it said on stderr.
type childError struct {
	args   []string
	err    error
	stderr string
}

func (e *childError) Error() string {
	return fmt.Sprintf("bench: child %s: %v: %s", strings.Join(e.args, " "), e.err, e.stderr)
}

func (e *childError) Unwrap() error { return e.err }

// Message is what the child said (its stderr, without the "nwc: " prefix),
// or the exit status when it said nothing.
func (e *childError) Message() string {
	if m := strings.TrimSpace(strings.TrimPrefix(e.stderr, "nwc: ")); m != "" {
		return m
	}
	return e.err.Error()
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// stagedSource is a .nwc file whose reads, from any goroutine (the
// prefetcher's too), add their stage times to times.
type stagedSource struct {
	*loader.NWCFile
	times *stage.Times
}

// ReadTensor decodes the named tensor with times attached to ctx.
func (s *stagedSource) ReadTensor(ctx context.Context, name string, dst []byte) ([]byte, error) {
	return s.NWCFile.ReadTensor(stage.With(ctx, s.times), name, dst)
}

// ReadRaw is ReadTensor without a context.
func (s *stagedSource) ReadRaw(name string, dst []byte) ([]byte, error) {
	return s.ReadTensor(context.Background(), name, dst)
}

// ReadFloat32 decodes the named tensor to float32.
func (s *stagedSource) ReadFloat32(name string, dst []float32) ([]float32, error) {
	return tensor.ReadFloat32(s, "nwc: "+s.Container().Name(), name, dst)
}

// stageSeconds holds seconds per stage, by stage name in JSON.
type stageSeconds [stage.NumStages]float64

func (s stageSeconds) MarshalJSON() ([]byte, error) {
	m := map[string]float64{}
	for i, v := range s {
		m[stage.Stage(i).String()] = v
	}
	return json.Marshal(m)
}

func (s *stageSeconds) UnmarshalJSON(b []byte) error {
	var m map[string]float64
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for i := range s {
		s[i] = m[stage.Stage(i).String()]
	}
	return nil
}

func (s stageSeconds) sum() float64 {
	var t float64
	for _, v := range s {
		t += v
	}
	return t
}

func secondsOf(t *stage.Times) stageSeconds {
	var s stageSeconds
	for i := range s {
		s[i] = t.Duration(stage.Stage(i)).Seconds()
	}
	return s
}

// decodeRun is what one child of `nwc bench decode` measures.
type decodeRun struct {
	File          string       `json:"file"`
	Tensors       int          `json:"tensors"`
	Weights       int64        `json:"weights"`
	LinearWeights int64        `json:"linear_weights"`
	FileBytes     int64        `json:"file_bytes"`
	LinearBits    float64      `json:"linear_bits_per_weight"`
	Codecs        []string     `json:"codecs"` // section codecs of the block linears
	OpenSeconds   float64      `json:"open_seconds"`
	WallSeconds   float64      `json:"wall_seconds"`
	LinearSeconds float64      `json:"linear_seconds"`
	Stages        stageSeconds `json:"stage_seconds"`
	GOMAXPROCS    int          `json:"gomaxprocs"`
	// PeakRSS: the child's own (selfPeakRSS), else the parent's rusage figure.
	PeakRSS int64 `json:"peak_rss_bytes,omitempty"`
}

// decodeFile decodes every tensor of the .nwc file at path to float32, in
// file order, the way the runtime reads them (stored bytes, then the
// conversion of non-F32 tensors, which is timed as stage.Rescale), with
// stage times attached. prefetch > 0 decodes that many tensors ahead in the
// background (loader.Prefetch); then the stage sums are CPU-side busy time
// and may exceed the wall time.
func decodeFile(ctx context.Context, path string, env codec.Env, prefetch int) (*decodeRun, error) {
	t0 := time.Now()
	nf, err := loader.OpenNWC(path, env)
	if err != nil {
		return nil, err
	}
	defer nf.Close()
	run := &decodeRun{File: path, OpenSeconds: time.Since(t0).Seconds(), FileBytes: nf.Container().Size(),
		LinearBits: loader.LinearBitsPerWeight(nf.Container())}
	seen := map[string]bool{}
	for _, e := range nf.Container().Entries() {
		if c := codec.Name(e.Codec); e.Kind == container.KindTensor && loader.IsBlockLinear(e.Info()) && !seen[c] {
			seen[c] = true
			run.Codecs = append(run.Codecs, c)
		}
	}
	var st stage.Times
	staged := &stagedSource{NWCFile: nf, times: &st}
	var src interface {
		ReadTensor(ctx context.Context, name string, dst []byte) ([]byte, error)
	} = staged
	if prefetch > 0 {
		pf := loader.Prefetch(ctx, staged, false, loader.PrefetchOptions{Ahead: prefetch})
		defer pf.Close()
		src = pf
	}
	var raw []byte
	var f32 []float32
	start := time.Now()
	for _, ti := range nf.Tensors() {
		ts := time.Now()
		n := ti.NumElements()
		raw, err = src.ReadTensor(ctx, ti.Name, raw)
		if err != nil {
			return nil, err
		}
		if ti.DType != tensor.F32 && ti.DType.IsFloat() {
			tc := time.Now()
			if f32, err = tensor.ToFloat32(ti.DType, raw, n, f32); err != nil {
				return nil, fmt.Errorf("bench: %s: tensor %q: %w", path, ti.Name, err)
			}
			st.Since(stage.Rescale, tc, n)
		}
		if loader.IsBlockLinear(ti) {
			run.LinearSeconds += time.Since(ts).Seconds()
			run.LinearWeights += n
		}
		run.Weights += n
		run.Tensors++
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	run.WallSeconds = time.Since(start).Seconds()
	run.Stages = secondsOf(&st)
	run.GOMAXPROCS = goMaxProcs()
	run.PeakRSS = selfPeakRSS()
	return run, nil
}

func stageName(i int) string { return stage.Stage(i).String() }

// childPeak is the peak RSS to report for a child: its own figure when it
// gave one, else rusage's.
func childPeak(own, rusage int64) int64 {
	if own > 0 {
		return own
	}
	return rusage
}
