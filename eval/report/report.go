// Package report turns rate-distortion measurements into a Markdown table,
// a JSON file and PNG plots (bits/weight against perplexity and KL).
package report

import (
	"encoding/json"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Point is one measured configuration.
type Point struct {
	Method        string  `json:"method"`          // series name, e.g. "rtn-g128"
	Setting       string  `json:"setting"`         // e.g. "4 bits"
	BitsPerWeight float64 `json:"bits_per_weight"` // of the coded linear weights, from file bytes
	FileBits      float64 `json:"file_bits_per_weight,omitempty"`
	Perplexity    float64 `json:"perplexity"`
	MeanKL        float64 `json:"mean_kl"`
	Tokens        int     `json:"tokens_scored"`
	// CompressSeconds and LoadSeconds: wall time of nwc compress and of
	// opening the file for eval (decoding every tensor), when measured.
	CompressSeconds float64 `json:"compress_seconds,omitempty"`
	LoadSeconds     float64 `json:"load_seconds,omitempty"`
}

// Report is a set of points plus the reference model's figures.
type Report struct {
	Title         string  `json:"title"`
	Model         string  `json:"model"`
	Text          string  `json:"text"`
	SeqLen        int     `json:"seq_len"`
	Windows       int     `json:"windows"`
	RefPerplexity float64 `json:"reference_perplexity"`
	Command       string  `json:"command"`
	// Notes are printed under the table (calibration, codec provenance).
	Notes  []string `json:"notes,omitempty"`
	Points []Point  `json:"points"`
}

// Has reports whether the report holds a point of this method and setting.
func (r *Report) Has(method, setting string) bool { return hasPoint(r.Points, method, setting) }

// Len is the number of points.
func (r *Report) Len() int { return len(r.Points) }

func (p Point) id() (method, setting string, bits float64) {
	return p.Method, p.Setting, p.BitsPerWeight
}

// tablePoint is a point of a table: Point, EmbedPoint.
type tablePoint interface {
	id() (method, setting string, bits float64)
}

// hasPoint reports whether pts holds a point of this method and setting.
func hasPoint[P tablePoint](pts []P, method, setting string) bool {
	for _, p := range pts {
		if m, s, _ := p.id(); m == method && s == setting {
			return true
		}
	}
	return false
}

// sortedPoints returns the points in table order: by method, then rate.
func sortedPoints[P tablePoint](pts []P) []P {
	out := append([]P(nil), pts...)
	sort.SliceStable(out, func(i, j int) bool {
		mi, _, bi := out[i].id()
		mj, _, bj := out[j].id()
		if mi != mj {
			return mi < mj
		}
		return bi < bj
	})
	return out
}

// writeNotes ends a table with its notes, one bullet each, and writes the
// document to w.
func writeNotes(w io.Writer, b *strings.Builder, notes []string) error {
	if len(notes) > 0 {
		b.WriteString("\n")
		for _, n := range notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeIndentedJSON writes v as indented JSON.
func writeIndentedJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// WriteMarkdown writes the table.
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\nModel `%s`, text %s, seq-len %d, %d windows (%d tokens scored). Reference perplexity %.4f.\n\n",
		r.Title, r.Model, r.Text, r.SeqLen, r.Windows, r.tokens(), r.RefPerplexity)
	fmt.Fprintf(&b, "Regenerate: `%s`\n\n", r.Command)
	b.WriteString("| method | setting | bits/weight (linear weights, from file bytes) | bits/weight (whole file) | perplexity | mean KL (nats) | compress s | load s |\n|---|---|---|---|---|---|---|---|\n")
	for _, p := range sortedPoints(r.Points) {
		fmt.Fprintf(&b, "| %s | %s | %.3f | %.3f | %.4f | %.5f | %s | %s |\n", p.Method, p.Setting, p.BitsPerWeight, p.FileBits, p.Perplexity, p.MeanKL, secs(p.CompressSeconds), secs(p.LoadSeconds))
	}
	return writeNotes(w, &b, r.Notes)
}

func secs(s float64) string {
	if s <= 0 {
		return ""
	}
	return strconv.FormatFloat(s, 'f', 1, 64)
}

func (r *Report) tokens() int {
	for _, p := range r.Points {
		return p.Tokens
	}
	return 0
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error { return writeIndentedJSON(w, r) }

// WritePlot writes a PNG with two panels side by side: bits/weight against
// perplexity (log scale) and against mean KL (log scale), one line per method.
func (r *Report) WritePlot(path string) (err error) {
	defer func() { // gonum/plot panics on some degenerate inputs: an error, not a crash
		if p := recover(); p != nil {
			err = fmt.Errorf("report: plot %s: %v", path, p)
		}
	}()
	return r.writePanels(path, "perplexity", r.RefPerplexity, "mean KL divergence (nats)")
}

// writePanels writes the two log-scale panels side by side: ylabel1 against
// Point.Perplexity (ref1 drawn as the reference line when > 0), ylabel2
// against Point.MeanKL. The caller recovers gonum/plot's panics.
func (r *Report) writePanels(path, ylabel1 string, ref1 float64, ylabel2 string) error {
	ppl, err := r.panel(ylabel1, func(p Point) float64 { return p.Perplexity }, ref1)
	if err != nil {
		return err
	}
	kl, err := r.panel(ylabel2, func(p Point) float64 { return p.MeanKL }, 0)
	if err != nil {
		return err
	}
	const w, h = 12 * vg.Inch, 4.5 * vg.Inch
	img := newCanvas(w, h)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 4, PadY: vg.Inch / 8, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{{ppl, kl}}, tiles, draw.New(img))
	ppl.Draw(canvases[0][0])
	kl.Draw(canvases[0][1])
	return savePNG(img, path)
}

var palette = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255},
}

func (r *Report) panel(ylabel string, y func(Point) float64, ref float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = r.Title
	p.X.Label.Text = "bits per weight (linear weights, file bytes)"
	p.Y.Label.Text = ylabel
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	p.Add(plotter.NewGrid())
	ylo, yhi := math.Inf(1), math.Inf(-1)
	xlo, xhi := math.Inf(1), math.Inf(-1)
	methods := []string{}
	by := map[string][]Point{}
	for _, pt := range r.Points {
		if _, ok := by[pt.Method]; !ok {
			methods = append(methods, pt.Method)
		}
		by[pt.Method] = append(by[pt.Method], pt)
	}
	for i, m := range methods {
		pts := by[m]
		sort.Slice(pts, func(a, b int) bool { return pts[a].BitsPerWeight < pts[b].BitsPerWeight })
		xy := plotter.XYs{}
		for _, pt := range pts {
			if v := y(pt); v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
				xy = append(xy, plotter.XY{X: pt.BitsPerWeight, Y: v})
				ylo, yhi = math.Min(ylo, v), math.Max(yhi, v)
				xlo, xhi = math.Min(xlo, pt.BitsPerWeight), math.Max(xhi, pt.BitsPerWeight)
			}
		}
		if len(xy) == 0 {
			continue
		}
		line, points, err := plotter.NewLinePoints(xy)
		if err != nil {
			return nil, err
		}
		c := palette[i%len(palette)]
		line.Color, points.Color = c, c
		points.Shape = draw.CircleGlyph{}
		p.Add(line, points)
		p.Legend.Add(m, line, points)
	}
	// Degenerate ranges (no plottable value, one value) would break the log
	// axis: give them a visible span.
	if ref > 0 {
		ylo, yhi = math.Min(ylo, ref), math.Max(yhi, ref)
	}
	switch {
	case math.IsInf(ylo, 1):
		p.Y.Min, p.Y.Max = 0.1, 1
	case ylo == yhi:
		p.Y.Min, p.Y.Max = ylo/1.5, yhi*1.5
	default:
		p.Y.Min, p.Y.Max = ylo/1.1, yhi*1.1
	}
	switch {
	case math.IsInf(xlo, 1):
		p.X.Min, p.X.Max = 0, 1
	case xlo == xhi:
		p.X.Min, p.X.Max = xlo-0.5, xhi+0.5
	}
	if ref > 0 {
		xmin, xmax := p.X.Min, p.X.Max
		refLine, err := plotter.NewLine(plotter.XYs{{X: xmin, Y: ref}, {X: xmax, Y: ref}})
		if err == nil {
			refLine.Dashes = []vg.Length{vg.Points(4), vg.Points(4)}
			refLine.Color = color.Black
			p.Add(refLine)
			p.Legend.Add("reference", refLine)
		}
	}
	p.Legend.Top = true
	return p, nil
}

func savePNG(c *vgCanvas, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("report: write %s: %w", path, err)
	}
	return f.Close()
}

// logTicks labels 1, 2 and 5 times each power of ten, so a range within one
// decade still gets readable labels.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	var ticks []plot.Tick
	if lo <= 0 || hi <= lo {
		return nil
	}
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for m := 1; m < 10; m++ {
			v := float64(m) * math.Pow(10, e)
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if m == 1 || m == 2 || m == 5 {
				t.Label = strconvG(v)
			}
			ticks = append(ticks, t)
		}
	}
	return ticks
}

func strconvG(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
