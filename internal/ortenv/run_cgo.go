//go:build cgo

package ortenv

import (
	"context"
	"errors"
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// Runner is a session that runs with run options
// (*ort.DynamicAdvancedSession, *ort.AdvancedSession).
type Runner interface {
	RunWithOptions(inputs, outputs []ort.Value, opts *ort.RunOptions) error
}

// Run runs s with the run options ro, terminating the run when ctx ends
// (ONNX Runtime checks the flag between kernels); it then returns ctx's
// error. ro is left reusable: its terminate flag is cleared again, and the
// watcher is gone before Run returns, so ro may be destroyed right after.
func Run(ctx context.Context, s Runner, ins, outs []ort.Value, ro *ort.RunOptions) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		_ = ro.Terminate()
	})
	err := s.RunWithOptions(ins, outs, ro)
	if !stop() {
		<-fired
		if uerr := ro.UnsetTerminate(); uerr != nil {
			return errors.Join(ctx.Err(), uerr)
		}
		return ctx.Err()
	}
	return err
}

// RunCancellable is Run with run options of its own, its errors named by
// what ("llama: prefill"): "WHAT cancelled: <ctx error>" when ctx ended,
// "WHAT: <error>" otherwise.
func RunCancellable(ctx context.Context, s Runner, ins, outs []ort.Value, what string) error {
	ro, err := ort.NewRunOptions()
	if err != nil {
		return fmt.Errorf("%s: run options: %w", what, err)
	}
	defer ro.Destroy()
	if err := Run(ctx, s, ins, outs, ro); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s cancelled: %w", what, ctx.Err())
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
