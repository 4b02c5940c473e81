//go:build cgo

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec/ldlq"
)

// benchSweep is what `bench rd` and `bench embed` share: the flags that name
// the points, the report's files (--out, --name, --resume), the calibration
// of the codecs that use it, and the loop that measures each point the
// report lacks and rewrites the report after every one.
type benchSweep struct {
	kind        string // "rd", "embed": the report's stem prefix
	model       *string
	runs        runList
	codecs      *string
	bitsList    *string
	outDir      *string
	name        *string
	resume      *bool
	calibTokens *int
	noCalib     *bool
	fbBlock     *int
	lf          lmFlags
}

// sweepReport is a report a sweep fills: report.Report (bench rd) or
// report.EmbedReport (bench embed).
type sweepReport interface {
	WriteMarkdown(io.Writer) error
	WritePlot(path string) error
	Has(method, setting string) bool
	Len() int
}

// newBenchSweep registers the shared flags on fs, with the command's
// defaults.
func newBenchSweep(fs *flag.FlagSet, kind, model, modelDoc, codecs, bits string) *benchSweep {
	b := &benchSweep{kind: kind}
	b.model = fs.String("model", model, modelDoc)
	fs.Var(&b.runs, "run", "CODEC=B1,B2,... (bits), or nwc / nwc=NAME1,NAME2 (shipped codecs); repeatable; overrides --codecs/--bits")
	b.codecs = fs.String("codecs", codecs, "comma-separated codecs (each at every --bits)")
	b.bitsList = fs.String("bits", bits, "comma-separated bit widths")
	b.outDir = fs.String("out", "docs/results", "directory for "+kind+"-<model>.{md,json,png}")
	b.name = fs.String("name", "", "report file stem (default "+kind+"-<model>)")
	b.resume = fs.Bool("resume", false, "keep the points already in the report's JSON and measure only the missing ones")
	b.calibTokens = fs.Int("calib-tokens", calib.DefaultTokens, "calibration tokens for H (gptq, ecsq, nwc)")
	b.noCalib = fs.Bool("no-calib", false, "no calibration data: H = I")
	b.fbBlock = fs.Int("feedback-block", 0, "LDLQ error-feedback block in columns for nwc and ecsq (0 = 16)")
	b.lf.register(fs)
	return b
}

// start returns the points and the report's stem, loading the report's
// JSON into rep with --resume (found tells whether there was one), and
// makes the output folder.
func (b *benchSweep) start(rep sweepReport) (points []benchPoint, stem string, found bool, err error) {
	if points, err = benchPoints(b.runs, *b.codecs, *b.bitsList); err != nil {
		return nil, "", false, err
	}
	if *b.name == "" {
		*b.name = b.kind + "-" + filepath.Base(*b.model)
	}
	stem = filepath.Join(*b.outDir, *b.name)
	if *b.resume {
		if found, err = loadResume(stem, rep); err != nil {
			return nil, "", false, err
		}
	}
	return points, stem, found, os.MkdirAll(*b.outDir, 0o755)
}

// feedbackBlock is --feedback-block with its default filled in.
func (b *benchSweep) feedbackBlock() int {
	if *b.fbBlock == 0 {
		return ldlq.FeedbackBlock
	}
	return *b.fbBlock
}

// calibrate computes H once when a point still to measure uses calibration
// (nil otherwise), and notes where it came from (describe words a measured
// H; a missing one is noted as calibrationFor says).
func (b *benchSweep) calibrate(ctx context.Context, src tensor.Source, points []benchPoint, rep sweepReport, sinkWeight float64, note func(string), describe func(*calibInfo) string) (loader.HessianFunc, error) {
	for _, p := range points {
		if rep.Has(p.method, p.setting) || !usesCalibration(p.codec) {
			continue
		}
		h, info, err := calibrationFor(ctx, src, *b.noCalib, *b.calibTokens, sinkWeight, b.lf, false)
		if err != nil {
			return nil, err
		}
		if info.Tokens == 0 {
			note("gptq-g128, ecsq, nwc: " + info.Note)
		} else {
			note(describe(info))
		}
		return h, nil
	}
	return nil, nil
}

// measure runs one(p) for every point rep lacks, in order, and writes the
// report (stem.{md,json,png}) after each, so a long run keeps what it
// measured; one adds its point to rep and returns the line that reports it.
// It ends by writing the report and printing its table.
func (b *benchSweep) measure(points []benchPoint, rep sweepReport, stem string, note func(string), one func(benchPoint) (string, error)) error {
	for i, p := range points {
		if rep.Has(p.method, p.setting) {
			fmt.Fprintf(os.Stderr, "[%d/%d] %s %s: in the report already\n", i+1, len(points), p.method, p.setting)
			continue
		}
		if strings.HasPrefix(p.codec, "nwc:") {
			note(codecProvenance(strings.TrimPrefix(p.codec, "nwc:")))
		}
		fmt.Fprintf(os.Stderr, "[%d/%d] %s %s: compress\n", i+1, len(points), p.method, p.setting)
		line, err := one(p)
		if err != nil {
			return fmt.Errorf("bench %s: %s %s: %w", b.kind, p.method, p.setting, err)
		}
		fmt.Fprintf(os.Stderr, "[%d/%d] %s %s: %s\n", i+1, len(points), p.method, p.setting, line)
		if err := writeReport(rep, stem); err != nil {
			return err
		}
	}
	if err := writeReport(rep, stem); err != nil {
		return err
	}
	fmt.Printf("wrote %s.md, %s.json, %s.png\n", stem, stem, stem)
	return rep.WriteMarkdown(os.Stdout)
}
