package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/nwc-project/nwc/eval/report"
)

const benchParetoUsage = "usage: nwc bench pareto --rd RD.json --decode DECODE.json [--bits 3,4] [--tol 0.5] [--out DIR] [--name STEM]"

// floorPrefix names the network-free floor codecs (latents times learned
// gains), highlighted on the plot.
const floorPrefix = "nwc-gain"

// paretoPoint is one rate-distortion point with its codec's decode speed.
type paretoPoint struct {
	Label         string  `json:"label"`  // the rd point: a trained codec's name, or CODEC@BITS
	Codec         string  `json:"codec"`  // decode report row
	Method        string  `json:"method"` // rd report method and setting
	Setting       string  `json:"setting"`
	TargetBits    float64 `json:"target_bits"`
	BitsPerWeight float64 `json:"bits_per_weight"`
	MeanKL        float64 `json:"mean_kl"`
	Perplexity    float64 `json:"perplexity"`
	// WeightsPerSecond: whole-model decode rate of the codec (bench decode),
	// LinearWeightsPerSecond: on the block linears only.
	WeightsPerSecond       float64 `json:"weights_per_second"`
	LinearWeightsPerSecond float64 `json:"linear_weights_per_second"`
	Floor                  bool    `json:"network_free_floor,omitempty"`
}

// paretoReport is what `nwc bench pareto` writes.
type paretoReport struct {
	Title   string        `json:"title"`
	Model   string        `json:"model"`
	RD      string        `json:"rd_report"`
	Decode  string        `json:"decode_report"`
	Command string        `json:"command"`
	Targets []float64     `json:"target_bits"`
	Tol     float64       `json:"tolerance_bits"`
	Points  []paretoPoint `json:"points"`
	Missing []string      `json:"missing,omitempty"` // rd points near a target with no decode row
	Notes   []string      `json:"notes,omitempty"`
}

// codecFamily is the part of a decode row's codec before "@": rows of one
// family decode at about the same speed whatever the rate.
func codecFamily(label string) string {
	f, _, _ := strings.Cut(label, "@")
	return f
}

// sameSections maps a codec to another that writes the same sections, so
// decodes at the same speed: GPTQ writes rtn sections.
var sameSections = map[string]string{"gptq-g32": "rtn-g32", "gptq-g64": "rtn-g64", "gptq-g128": "rtn-g128"}

// rdKey gives an rd point's decode label and family: the trained codec's
// name for nwc points, METHOD@BITS otherwise.
func rdKey(p report.Point) (label, family string) {
	if strings.HasPrefix(p.Method, "nwc") { // trained codecs: one series per family
		return p.Setting, p.Setting
	}
	bits := strings.TrimSuffix(strings.TrimSpace(p.Setting), " bits")
	return p.Method + "@" + bits, p.Method
}

// joinPareto matches the rd points within tol bits of each target with the
// decode row of the same label (CODEC@BITS, a trained codec's name), or
// else of the same family.
func joinPareto(rd *report.Report, dec *decodeReport, targets []float64, tol float64) (pts []paretoPoint, missing []string) {
	byLabel, byFamily := map[string]decodeRow{}, map[string]decodeRow{}
	for _, row := range dec.Rows {
		byLabel[row.Codec] = row
		if _, ok := byFamily[codecFamily(row.Codec)]; !ok {
			byFamily[codecFamily(row.Codec)] = row
		}
	}
	for _, t := range targets {
		for _, p := range rd.Points {
			if math.Abs(p.BitsPerWeight-t) > tol {
				continue
			}
			label, family := rdKey(p)
			row, ok := byLabel[label]
			if !ok {
				row, ok = byFamily[family]
			}
			if alias, has := sameSections[family]; has && !ok {
				if row, ok = byLabel[alias+strings.TrimPrefix(label, family)]; !ok {
					row, ok = byFamily[alias]
				}
			}
			if !ok {
				missing = append(missing, fmt.Sprintf("%s %s", p.Method, p.Setting))
				continue
			}
			pts = append(pts, paretoPoint{Label: label, Codec: row.Codec, Method: p.Method, Setting: p.Setting, TargetBits: t,
				BitsPerWeight: p.BitsPerWeight, MeanKL: p.MeanKL, Perplexity: p.Perplexity,
				WeightsPerSecond: row.WeightsPerSecond, LinearWeightsPerSecond: row.LinearWeightsPerSecond,
				Floor: strings.HasPrefix(label, floorPrefix)})
		}
	}
	return pts, missing
}

func runBenchPareto(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench pareto", flag.ContinueOnError)
	rdPath := fs.String("rd", "", "rate-distortion report (bench rd JSON)")
	decPath := fs.String("decode", "", "decode speed report (bench decode JSON)")
	bitsList := fs.String("bits", "3,4", "target rates in bits/weight (block linears): one panel each")
	tol := fs.Float64("tol", 0.5, "rd points within this many bits/weight of a target count as at that rate")
	outDir := fs.String("out", "docs/results", "directory for the report")
	name := fs.String("name", "", "report file stem (default pareto-<model>)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *rdPath == "" || *decPath == "" {
		fmt.Fprintln(os.Stderr, benchParetoUsage)
		return errUsage
	}
	var targets []float64
	for _, f := range strings.Split(*bitsList, ",") {
		b, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(b > 0 && b <= 32) {
			return fmt.Errorf("bench pareto: --bits %q: want rates in (0, 32]", *bitsList)
		}
		targets = append(targets, b)
	}
	if !(*tol >= 0) {
		return fmt.Errorf("bench pareto: --tol %g", *tol)
	}
	rd := &report.Report{}
	if err := readJSONFile(*rdPath, rd); err != nil {
		return err
	}
	dec := &decodeReport{}
	if err := readJSONFile(*decPath, dec); err != nil {
		return err
	}
	rep := &paretoReport{Title: "KL at fixed rate against decode speed", Model: rd.Model, RD: *rdPath, Decode: *decPath,
		Command: "bin/nwc " + strings.Join(append([]string{"bench", "pareto"}, args...), " "), Targets: targets, Tol: *tol}
	rep.Points, rep.Missing = joinPareto(rd, dec, targets, *tol)
	if len(rep.Points) == 0 {
		return fmt.Errorf("bench pareto: no rd point of %s within %g bits of %s has a decode row in %s", *rdPath, *tol, *bitsList, *decPath)
	}
	rep.Notes = []string{
		"KL, perplexity and bits/weight (block linears, from file bytes) from the rd report; decode weights/s (all tensors to float32, median, whole model) from the decode report, matched by codec name (CODEC@BITS for the baselines, else the same codec family at another rate: their decode speed hardly depends on the rate; gptq-g128 takes rtn-g128's, whose sections it writes).",
		fmt.Sprintf("A point belongs to a panel when its rate is within %g bits/weight of the panel's target.", *tol),
		"Codecs named " + floorPrefix + "* are the network-free floor (latents times learned per-level, per-channel gains).",
	}
	if dec.Machine != "" {
		rep.Notes = append(rep.Notes, fmt.Sprintf("Decode speeds measured on %s, GOMAXPROCS %d.", dec.Machine, dec.gomaxprocs()))
	}
	if *name == "" {
		*name = "pareto-" + filepath.Base(rd.Model)
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return fmt.Errorf("bench pareto: %w", err)
	}
	stem := filepath.Join(*outDir, *name)
	if err := writeReportFiles(stem, rep.WriteMarkdown, rep, rep.plot); err != nil {
		return err
	}
	fmt.Printf("wrote %s.md, %s.json, %s.png\n", stem, stem, stem)
	return rep.WriteMarkdown(os.Stdout)
}

// readJSONFile decodes the JSON file at path into v.
func readJSONFile(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("bench: %s: %w", path, err)
	}
	return nil
}

// WriteMarkdown writes the joined table.
func (r *paretoReport) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s: %s\n\nFrom %s and %s.\n\nRegenerate: `%s`\n\n", r.Title, r.Model, r.RD, r.Decode, r.Command)
	b.WriteString("| target bits | codec | decode row | bits/weight | mean KL (nats) | perplexity | M weights/s (decode) | M weights/s (block linears) |\n|---|---|---|---|---|---|---|---|\n")
	pts := append([]paretoPoint(nil), r.Points...)
	sort.SliceStable(pts, func(i, j int) bool {
		if pts[i].TargetBits != pts[j].TargetBits {
			return pts[i].TargetBits < pts[j].TargetBits
		}
		return pts[i].WeightsPerSecond > pts[j].WeightsPerSecond
	})
	for _, p := range pts {
		c := p.Label
		if p.Floor {
			c += " (network-free floor)"
		}
		fmt.Fprintf(&b, "| %g | %s | %s | %.3f | %.5f | %.4f | %.1f | %.1f |\n", p.TargetBits, c, p.Codec,
			p.BitsPerWeight, p.MeanKL, p.Perplexity, p.WeightsPerSecond/1e6, p.LinearWeightsPerSecond/1e6)
	}
	if len(r.Missing) > 0 {
		fmt.Fprintf(&b, "\nNo decode row for: %s.\n", strings.Join(r.Missing, ", "))
	}
	writeNotes(&b, r.Notes)
	_, err := io.WriteString(w, b.String())
	return err
}

// plot draws one panel per target rate: mean KL against decode weights/s
// (both log scale), one labelled marker per codec, the floor in red.
func (r *paretoReport) plot(path string) (err error) {
	defer func() { // gonum/plot panics on some degenerate inputs
		if p := recover(); p != nil {
			err = fmt.Errorf("bench: plot %s: %v", path, p)
		}
	}()
	var panels []*plot.Plot
	for _, t := range r.Targets {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%s: KL at ~%g bits/weight", r.Model, t)
		p.X.Label.Text = "decode M weights/s (whole model, log)"
		p.Y.Label.Text = "mean KL (nats, log)"
		p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
		p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
		p.Add(plotter.NewGrid())
		var xy, floor plotter.XYs
		var labels, floorLabels []string
		for _, pt := range r.Points {
			if pt.TargetBits != t || !(pt.WeightsPerSecond > 0) || !(pt.MeanKL > 0) {
				continue
			}
			v := plotter.XY{X: pt.WeightsPerSecond / 1e6, Y: pt.MeanKL}
			l := fmt.Sprintf("%s (%.2f b)", pt.Label, pt.BitsPerWeight)
			if pt.Floor {
				floor, floorLabels = append(floor, v), append(floorLabels, l)
			} else {
				xy, labels = append(xy, v), append(labels, l)
			}
		}
		for _, set := range []struct {
			xy     plotter.XYs
			labels []string
			name   string
			color  color.RGBA
			glyph  draw.GlyphDrawer
		}{{xy, labels, "codecs", color.RGBA{31, 119, 180, 255}, draw.CircleGlyph{}},
			{floor, floorLabels, "network-free floor", color.RGBA{214, 39, 40, 255}, draw.PyramidGlyph{}}} {
			if len(set.xy) == 0 {
				continue
			}
			sc, err := plotter.NewScatter(set.xy)
			if err != nil {
				return fmt.Errorf("bench: plot %s: %w", path, err)
			}
			sc.GlyphStyle.Color, sc.GlyphStyle.Shape, sc.GlyphStyle.Radius = set.color, set.glyph, vg.Points(4)
			lb, err := plotter.NewLabels(plotter.XYLabels{XYs: set.xy, Labels: set.labels})
			if err != nil {
				return fmt.Errorf("bench: plot %s: %w", path, err)
			}
			for i := range lb.TextStyle {
				lb.TextStyle[i].Font.Size = vg.Points(7)
				lb.TextStyle[i].Color = set.color
			}
			lb.Offset = vg.Point{X: vg.Points(5), Y: vg.Points(2)}
			p.Add(sc, lb)
			p.Legend.Add(set.name, sc)
		}
		padLog(&p.X)
		padLog(&p.Y)
		p.Legend.Top = true
		panels = append(panels, p)
	}
	if len(panels) == 0 {
		return errors.New("bench: pareto: nothing to plot")
	}
	const pw, h = 6.5 * vg.Inch, 5 * vg.Inch
	img := plotCanvas(vg.Length(len(panels))*pw, h)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Inch / 4, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	cs := plot.Align([][]*plot.Plot{panels}, tiles, draw.New(img))
	for i, p := range panels {
		p.Draw(cs[0][i])
	}
	return savePlotPNG(img, path)
}

// padLog widens a log axis so that markers and labels are not cut, and
// gives a single value a span.
func padLog(a *plot.Axis) {
	if a.Min <= 0 || a.Max <= 0 || math.IsInf(a.Min, 0) || math.IsInf(a.Max, 0) {
		a.Min, a.Max = 0.1, 10
		return
	}
	a.Min /= 1.6
	a.Max *= 2.5
}
