//go:build cgo

package ortenv

import (
	"context"
	"errors"

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
