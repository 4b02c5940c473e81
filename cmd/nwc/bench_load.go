package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

const benchLoadUsage = "usage: nwc bench load [--model NAME] [--nwc A.nwc,B.nwc | --codec C1,C2] [--st FILE.safetensors] [--threads N] [--repeat 3] [--out DIR] [--name STEM]"

// The sources `nwc bench load` compares, in the order they are run.
const (
	loadGGUF = "gguf"
	loadNWC  = "nwc"
	loadST   = "safetensors"
)

// loadRun is what one child of `nwc bench load` measures: from nothing to a
// model ready to score (what `nwc eval` does before scoring), by phase.
type loadRun struct {
	Kind string `json:"kind"`
	File string `json:"file"`
	// ReadySeconds = Open + Init + Weights + Session.
	ReadySeconds float64 `json:"ready_seconds"`
	// OpenSeconds: loader.Open (header, index, assets).
	OpenSeconds float64 `json:"open_seconds"`
	// InitSeconds: the architecture config and ONNX Runtime's
	// initialization, up to the first weight read.
	InitSeconds float64 `json:"init_seconds"`
	// WeightsSeconds: first to last weight handed to the graph builder
	// (decoding, overlapped by the prefetcher with laying out the graph).
	WeightsSeconds float64 `json:"weights_seconds"`
	// SessionSeconds: last weight to ready (serializing the graph and
	// creating the ONNX Runtime session).
	SessionSeconds float64 `json:"session_seconds"`
	Weights        int64   `json:"weights"`
	FileBytes      int64   `json:"file_bytes"`
	// Stages: decode stage times of a .nwc file (CPU time summed over the
	// prefetcher's goroutines).
	Stages  stageSeconds `json:"stage_seconds"`
	PeakRSS int64        `json:"peak_rss_bytes,omitempty"` // the child's own, else rusage's
}

// loadRow is one source of `nwc bench load`: medians of its runs.
type loadRow struct {
	loadRun
	// Ratio is ReadySeconds over the GGUF's (0 when there is none).
	Ratio float64   `json:"ratio_to_gguf,omitempty"`
	Runs  []float64 `json:"ready_seconds_runs,omitempty"`
	// Error says why the runtime could not load this source.
	Error string `json:"error,omitempty"`
}

// newLoadRow takes the medians of runs (ready time; its phases and stages
// from the run with the median ready time; peak RSS).
func newLoadRow(runs []loadRun) loadRow {
	ready, rss := make([]float64, len(runs)), make([]float64, len(runs))
	for i, r := range runs {
		ready[i], rss[i] = r.ReadySeconds, float64(r.PeakRSS)
	}
	row := loadRow{loadRun: runs[medianIndex(ready)], Runs: ready}
	row.PeakRSS = int64(median(rss))
	return row
}

// loadReport is what `nwc bench load` writes.
type loadReport struct {
	benchMeta
	Rows []loadRow `json:"rows"`
}

// ratios fills Ratio against the GGUF row.
func (r *loadReport) ratios() {
	var base float64
	for _, row := range r.Rows {
		if row.Kind == loadGGUF && row.Error == "" {
			base = row.ReadySeconds
		}
	}
	for i := range r.Rows {
		if base > 0 && r.Rows[i].Error == "" {
			r.Rows[i].Ratio = r.Rows[i].ReadySeconds / base
		}
	}
}

// WriteMarkdown writes the table and the notes.
func (r *loadReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: %s\n\n%s, medians of %d runs.\n\nRegenerate: `%s`\n\n", r.Title, r.Model, r.Machine, r.Repeat, r.Command)
	b.WriteString("| source | file | file MB | ready s | ratio to GGUF | open s | init s | weights s | session s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, row := range r.Rows {
		if row.Error != "" {
			fmt.Fprintf(&b, "| %s | %s | | not loadable: %s | | | | | | |\n", row.Kind, row.File, strings.ReplaceAll(row.Error, "|", "/"))
			continue
		}
		ratio := ""
		if row.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx", row.Ratio)
		}
		fmt.Fprintf(&b, "| %s | %s | %.1f | %.2f | %s | %.2f | %.2f | %.2f | %.2f | %.0f |\n", row.Kind, row.File, float64(row.FileBytes)/1e6,
			row.ReadySeconds, ratio, row.OpenSeconds, row.InitSeconds, row.WeightsSeconds, row.SessionSeconds, float64(row.PeakRSS)/1e6)
	}
	for _, row := range r.Rows {
		if row.Stages.sum() == 0 {
			continue
		}
		fmt.Fprintf(&b, "\nDecode stages of the %s file while loading (CPU seconds, summed over the prefetcher's goroutines):", row.Kind)
		for i, s := range row.Stages {
			fmt.Fprintf(&b, " %s %.2f", stageName(i), s)
			if i < len(row.Stages)-1 {
				b.WriteString(",")
			}
		}
		b.WriteString(".\n")
	}
	writeNotes(&b, r.Notes)
	_, err := io.WriteString(w, b.String())
	return err
}

// plot draws one stacked bar per source: seconds per phase.
func (r *loadReport) plot(path string) error {
	series := []string{"open", "init", "weights", "session"}
	vals := make([][]float64, len(series))
	var labels []string
	for _, row := range r.Rows {
		if row.Error != "" {
			continue
		}
		label := row.Kind
		if row.Kind == loadNWC {
			label = benchLabel(row.File)
		}
		labels = append(labels, label)
		for i, v := range []float64{row.OpenSeconds, row.InitSeconds, row.WeightsSeconds, row.SessionSeconds} {
			vals[i] = append(vals[i], v)
		}
	}
	return stackedBars(path, "time to a ready model: "+r.Model, "seconds", labels, series, vals)
}

// benchLabel names a cached bench file by its codec
// (smollm2-135m-nwc-gain-l300-ab12cd34ef56.nwc -> nwc-gain-l300).
func benchLabel(file string) string {
	base := strings.TrimSuffix(filepath.Base(file), ".nwc")
	if i := strings.LastIndexByte(base, '-'); i > 0 {
		base = base[:i] // the hash
	}
	if i := strings.Index(base, "-nwc-"); i >= 0 {
		return base[i+1:]
	}
	return base
}
