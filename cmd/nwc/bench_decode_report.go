package main

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"runtime"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/nwc-project/nwc/loader/stage"
)

// benchMeta is what every timing report starts with.
type benchMeta struct {
	Title   string   `json:"title"`
	Model   string   `json:"model,omitempty"`
	Command string   `json:"command"`
	Machine string   `json:"machine"`
	Repeat  int      `json:"repeat"`
	Notes   []string `json:"notes,omitempty"`
}

// newBenchMeta describes a run of `nwc bench sub args...` on this machine.
func newBenchMeta(title, model, sub string, args []string, repeat int) benchMeta {
	return benchMeta{Title: title, Model: model, Repeat: repeat,
		Command: "bin/nwc " + strings.Join(append([]string{"bench", sub}, args...), " "),
		Machine: fmt.Sprintf("%s/%s, %d CPUs", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())}
}

// writeNotes writes notes as a Markdown list after a blank line.
func writeNotes(b *strings.Builder, notes []string) {
	if len(notes) == 0 {
		return
	}
	b.WriteString("\n")
	for _, n := range notes {
		fmt.Fprintf(b, "- %s\n", n)
	}
}

// decodeReport is what `nwc bench decode` writes.
type decodeReport struct {
	benchMeta
	Sweep bool        `json:"sweep,omitempty"`
	Rows  []decodeRow `json:"rows"`
}

func (r *decodeReport) notes() {
	r.Notes = append(r.Notes,
		"Every run is a fresh process (`bench decode --child FILE`) that opens the file and decodes every tensor to float32 in file order, as the runtime reads them; rows are measured interleaved and the figures are medians over the runs (the stage breakdown is that of the run with the median wall time). Opening the file (index, assets) is not in the wall time.",
		"M weights/s per stage: all decoded weights over that stage's time, i.e. the rate if that stage were the only cost. read and checksum are the container's (file read, CRC-32C); entropy: zstd, bit unpacking, rANS; network: the decoder network; rescale: dequantization, row scales and conversion into float32 (including the GGML dequantization of tensors kept in their stored type, like a Q8_0 embedding). other: the wall time no stage accounts for (loop, allocation, GC, and any stage a decoder does not time yet).",
		"block linears: the linear weights of the transformer blocks (what the lossy codecs code), over the time spent on them; every other tensor is kept losslessly in its stored type.",
		"peak RSS: the child process's own high-water mark (VmHWM on Linux; ru_maxrss elsewhere, which on Linux would also count the parent's peak at the fork). The decoded tensors are not kept: one tensor's buffers at a time, plus the decoder sessions.",
	)
}

// WriteMarkdown writes the table and the notes.
func (r *decodeReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s", r.Title)
	if r.Model != "" {
		fmt.Fprintf(&b, ": %s", r.Model)
	}
	fmt.Fprintf(&b, "\n\n%s, GOMAXPROCS %d, medians of %d runs.\n\nRegenerate: `%s`\n\n", r.Machine, r.gomaxprocs(), r.Repeat, r.Command)
	b.WriteString("| codec | bits/weight (block linears) | threads | sessions | batch | prefetch | weights | wall s | M weights/s | M weights/s (block linears) |")
	for s := stage.Stage(0); s < stage.NumStages; s++ {
		fmt.Fprintf(&b, " %s |", s)
	}
	b.WriteString(" other s | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|")
	b.WriteString(strings.Repeat("---|", int(stage.NumStages)+2) + "\n")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "| %s | %.3f | %s | %s | %s | %s | %d | %.4g | %.1f | %.1f |", row.Codec, row.LinearBits,
			knob(row.Threads), knob(row.Sessions), knob(row.Batch), knob(row.Prefetch), row.Weights, row.WallSeconds,
			row.WeightsPerSecond/1e6, row.LinearWeightsPerSecond/1e6)
		for _, s := range row.Stages {
			if s.WeightsPerSecond > 0 {
				fmt.Fprintf(&b, " %.1f |", s.WeightsPerSecond/1e6)
			} else {
				b.WriteString(" - |")
			}
		}
		fmt.Fprintf(&b, " %.3f | %.0f |\n", row.OtherSeconds, float64(row.PeakRSS)/1e6)
	}
	writeNotes(&b, r.Notes)
	_, err := io.WriteString(w, b.String())
	return err
}

func (r *decodeReport) gomaxprocs() int {
	for _, row := range r.Rows {
		return row.GOMAXPROCS
	}
	return 0
}

// knob prints a decoder setting, 0 being the default.
func knob(v int) string {
	if v == 0 {
		return "default"
	}
	return fmt.Sprint(v)
}

// write writes stem.md, stem.json and stem.png.
func (r *decodeReport) write(stem string) error {
	return writeReportFiles(stem, r.WriteMarkdown, r, r.plot)
}

// writeReportFiles writes stem.md (md), stem.json (v) and stem.png (png).
func writeReportFiles(stem string, md func(io.Writer) error, v any, png func(string) error) error {
	for ext, write := range map[string]func(io.Writer) error{
		".md":   md,
		".json": func(w io.Writer) error { return writeJSON(w, v) },
	} {
		f, err := os.Create(stem + ext)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		if err := write(f); err != nil {
			f.Close()
			return fmt.Errorf("bench: %s%s: %w", stem, ext, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
	}
	return png(stem + ".png")
}

var stageColors = [...]color.RGBA{
	{127, 127, 127, 255}, {188, 189, 34, 255}, {31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {220, 220, 220, 255},
}

// rowLabel names a row on the plot: the codec, and the knobs in a sweep.
func (r *decodeReport) rowLabel(row decodeRow) string {
	if !r.Sweep {
		return row.Codec
	}
	return fmt.Sprintf("t%s s%s b%s p%s", knob(row.Threads), knob(row.Sessions), knob(row.Batch), knob(row.Prefetch))
}

// plot draws one stacked bar per row: nanoseconds per weight of each stage
// and of the rest of the wall time.
func (r *decodeReport) plot(path string) error {
	var labels, series []string
	for s := stage.Stage(0); s < stage.NumStages; s++ {
		series = append(series, s.String())
	}
	series = append(series, "other")
	vals := make([][]float64, len(series))
	for _, row := range r.Rows {
		labels = append(labels, r.rowLabel(row))
		for s := range series {
			v := 0.0
			switch {
			case row.Weights == 0:
			case s < len(row.Stages):
				v = row.Stages[s].NsPerWeight
			default:
				v = row.OtherSeconds * 1e9 / float64(row.Weights)
			}
			vals[s] = append(vals[s], v)
		}
	}
	title := "decode time per weight by stage"
	if r.Model != "" {
		title += ": " + r.Model
	}
	return stackedBars(path, title, "ns per weight (all tensors, to float32)", labels, series, vals)
}

// stackedBars saves a bar chart with one bar per label, stacked from
// vals[series][label], as a PNG.
func stackedBars(path, title, ylabel string, labels, series []string, vals [][]float64) (err error) {
	defer func() { // gonum/plot panics on some degenerate inputs
		if p := recover(); p != nil {
			err = fmt.Errorf("bench: plot %s: %v", path, p)
		}
	}()
	if len(labels) == 0 {
		return nil
	}
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = ylabel
	p.Add(plotter.NewGrid())
	width := vg.Points(math.Min(40, 500/float64(len(labels))))
	var below *plotter.BarChart
	for s, name := range series {
		bars, err := plotter.NewBarChart(plotter.Values(vals[s]), width)
		if err != nil {
			return fmt.Errorf("bench: plot %s: %w", path, err)
		}
		bars.Color = stageColors[s%len(stageColors)]
		bars.LineStyle.Width = 0
		if below != nil {
			bars.StackOn(below)
		}
		below = bars
		p.Add(bars)
		p.Legend.Add(name, bars)
	}
	// Room for the legend above the tallest bar, and half a bar's room at
	// either end.
	top := 0.0
	for i := range labels {
		sum := 0.0
		for s := range series {
			sum += vals[s][i]
		}
		top = math.Max(top, sum)
	}
	if top > 0 {
		p.Y.Min, p.Y.Max = 0, top*(1.15+0.06*float64(len(series)))
	}
	p.Legend.Top = true
	p.Title.Padding = vg.Points(6)
	p.NominalX(labels...)
	p.X.Min, p.X.Max = -0.6, float64(len(labels))-0.4
	p.X.Tick.Label.Rotation = math.Pi / 6
	p.X.Tick.Label.XAlign = draw.XRight
	p.X.Tick.Label.YAlign = draw.YCenter
	w := vg.Length(math.Max(6, 0.6*float64(len(labels))+2)) * vg.Inch
	if err := p.Save(w, 5*vg.Inch, path); err != nil {
		return fmt.Errorf("bench: plot %s: %w", path, err)
	}
	return nil
}

// plotCanvas is a PNG canvas of w x h for several panels.
func plotCanvas(w, h vg.Length) *vgimg.PngCanvas {
	return &vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
}

// savePlotPNG writes c to path.
func savePlotPNG(c *vgimg.PngCanvas, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: write %s: %w", path, err)
	}
	return f.Close()
}
