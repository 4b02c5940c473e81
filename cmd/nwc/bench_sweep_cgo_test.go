//go:build cgo

package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/eval/report"
	"github.com/nwc-project/nwc/internal/tensortest"
)

// TestBenchSweeps runs `bench embed` and `bench rd` on real models at one
// cheap point each, then again with --resume: the point already in the
// report is kept, not measured again, and a report of another setting is
// refused.
func TestBenchSweeps(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		model string
		args  []string
		other []string // a --resume run the report's settings forbid
	}{
		{"minilm-l6", []string{"embed", "--sentences", "40", "--topk", "5"}, []string{"embed", "--sentences", "41"}},
		{"smollm2-135m", []string{"rd", "--seq-len", "128", "--max-windows", "1"}, []string{"rd", "--seq-len", "129", "--max-windows", "1"}},
	} {
		t.Run(c.args[0], func(t *testing.T) {
			tensortest.RequireModel(t, c.model)
			dir := t.TempDir()
			common := []string{"--model", c.model, "--codecs", "rtn-g128", "--bits", "4", "--out", dir, "--name", "r", "--threads", "2"}
			run := func(extra ...string) (int, error) {
				t.Helper()
				args := append(append(append([]string{}, c.args...), common...), extra...)
				if _, err := capture(t, func() error { return runBench(ctx, args) }); err != nil {
					return 0, err
				}
				b, err := os.ReadFile(filepath.Join(dir, "r.json"))
				if err != nil {
					t.Fatal(err)
				}
				var rep struct {
					Points []json.RawMessage `json:"points"`
				}
				if err := json.Unmarshal(b, &rep); err != nil {
					t.Fatal(err)
				}
				return len(rep.Points), nil
			}
			if n, err := run(); err != nil || n != 1 {
				t.Fatalf("first run: %v, %d points", err, n)
			}
			for _, ext := range []string{".md", ".png"} {
				if fi, err := os.Stat(filepath.Join(dir, "r"+ext)); err != nil || fi.Size() == 0 {
					t.Errorf("r%s: %v", ext, err)
				}
			}
			if n, err := run("--resume"); err != nil || n != 1 {
				t.Fatalf("--resume: %v, %d points (the point is in the report already)", err, n)
			}
			args := append(append(append([]string{}, c.other...), common...), "--resume")
			if err := runBench(ctx, args); err == nil || !strings.Contains(err.Error(), "--resume") {
				t.Errorf("--resume on a report of other settings: %v", err)
			}
		})
	}
	var _ sweepReport = (*report.Report)(nil)
	var _ sweepReport = (*report.EmbedReport)(nil)
}
