package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/codec/gptq"
	"github.com/nwc-project/nwc/loader/codec/rtn"
)

func runCompress(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("compress", flag.ContinueOnError)
	model := fs.String("model", "", "model to compress: reference name (nwc models) or path")
	codecName := fs.String("codec", "nwc", "codec (nwc codecs lists them): "+strings.Join(codec.Names(), ", ")+"; nwc:NAME picks a trained codec")
	bits := fs.Float64("bits", 4, "bit width of the lossy codecs")
	out := fs.String("o", "", "output .nwc file")
	jobs := fs.Int("j", 0, "tensors coded in parallel (0 = all cores)")
	asJSON := fs.Bool("json", false, "print a JSON summary")
	calibTokens := fs.Int("calib-tokens", calib.DefaultTokens, "calibration tokens for H = X^T X (gptq, ecsq, nwc), from the carried Gutenberg text")
	protocol := fs.String("calib", calib.ProtocolOnePass, "calibration protocol of gptq, ecsq, nwc: "+calib.ProtocolOnePass+" (every H from the unquantized model) or "+calib.ProtocolSequential+" (GPTQ's: block by block, each H from the model coded so far, true-sequential inside a block; cached per model, codec and rate)")
	noCalib := fs.Bool("no-calib", false, "no calibration data: H = I (no error feedback, all columns equally important)")
	fbBlock := fs.Int("feedback-block", 0, "LDLQ error-feedback block in columns for nwc and ecsq (0 = 16)")
	uniform := fs.Bool("uniform-levels", false, "nwc, ablation: every column at quality level 0 (no importance levels; H still drives the error feedback)")
	tuneScales := fs.Bool("tune-row-scales", false, "nwc and ecsq: after coding a matrix, refit each row's scale to minimize its H-weighted error (closed form)")
	sinkWeight := fs.Float64("sink-weight", calib.DefaultSinkWeight, "times the first token of every calibration window counts in H (attention sink; 1 = plain X^T X)")
	group := fs.Int("group", 0, "columns per scale/zero group for rtn-g* and gptq-g* (32, 64, 128; 0 = the codec name's): --codec gptq-g128 --group 64 is gptq-g64")
	actOrder := fs.Bool("act-order", false, "gptq: quantize columns by descending diag(H), with static groups (same as --codec gptq-gN:act)")
	var lf lmFlags
	lf.register(fs)
	quiet := fs.Bool("q", false, "no progress bar")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *model == "" && len(pos) == 1 {
		*model = pos[0]
	} else if len(pos) > 0 {
		return fmt.Errorf("compress: unexpected arguments %v", pos)
	}
	if *model == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: nwc compress --model PATH|NAME --codec lossless -o OUT.nwc")
		return errUsage
	}
	if *codecName, err = groupCodec(*codecName, *group, *actOrder); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	bitsSet := false
	fs.Visit(func(f *flag.Flag) { bitsSet = bitsSet || f.Name == "bits" })
	if c, _, err := codec.Lookup(*codecName); err == nil && !c.Lossy && bitsSet {
		return fmt.Errorf("compress: --codec %s is lossless and takes no --bits (drop --bits, or pick a lossy codec: nwc, ecsq, gptq-g128, rtn-g128)", *codecName)
	}
	if *protocol != calib.ProtocolOnePass && *protocol != calib.ProtocolSequential {
		return fmt.Errorf("compress: --calib %q: want %s or %s", *protocol, calib.ProtocolOnePass, calib.ProtocolSequential)
	}
	if *protocol == calib.ProtocolSequential && *noCalib {
		return fmt.Errorf("compress: --calib %s and --no-calib exclude each other", calib.ProtocolSequential)
	}
	if c, _, err := codec.Lookup(*codecName); err == nil { // checked before the model loads
		for _, o := range []struct {
			set  bool
			flag string
			cfg  codec.Config
		}{{*uniform, "--uniform-levels", codec.Config{UniformLevels: true}}, {*tuneScales, "--tune-row-scales", codec.Config{TuneRowScales: true}}} {
			if !o.set {
				continue
			}
			if err := c.Check(o.cfg); err != nil {
				return fmt.Errorf("compress: %s: %w", o.flag, err)
			}
		}
	}
	if err := lf.init(); err != nil {
		return fmt.Errorf("compress: %w", err)
	}
	src, _, err := loader.Open(*model, lf.env())
	if err != nil {
		return err
	}
	defer src.Close()
	opts := loader.CompressOptions{Codec: *codecName, Bits: *bits, Concurrency: *jobs, FeedbackBlock: *fbBlock,
		UniformLevels: *uniform, TuneRowScales: *tuneScales, Env: lf.env()}
	rep := compressReport{}
	var seqInfo func() *calibInfo
	switch {
	case usesCalibration(*codecName) && *protocol == calib.ProtocolSequential:
		if opts.Sequential, seqInfo, err = sequentialFor(ctx, src, *calibTokens, *sinkWeight, lf, *quiet); err != nil {
			return err
		}
	case usesCalibration(*codecName):
		h, info, err := calibrationFor(ctx, src, *noCalib, *calibTokens, *sinkWeight, lf, *quiet)
		if err != nil {
			return err
		}
		opts.Hessian, rep.Calibration = h, info
	}
	progress, finish := newProgress("compress", *quiet) // stderr: --json stays clean
	opts.Progress = progress
	sum, err := loader.Compress(ctx, src, *out, opts)
	finish()
	if err != nil {
		return err
	}
	if seqInfo != nil {
		rep.Calibration = seqInfo()
	}
	rep.Summary = sum
	if *asJSON {
		return writeJSON(os.Stdout, rep)
	}
	fmt.Printf("%s: %d tensors, %d weights, %d -> %d bytes, %.3f bits/weight (whole file), %.3f bits/weight (block linears), %.1f s\n",
		sum.Output, len(sum.Tensors), sum.Weights, sum.RawBytes, sum.FileBytes, sum.BitsPerWeight, sum.LinearBitsPerWeight, sum.Seconds)
	return nil
}

// compressReport is compress's --json output.
type compressReport struct {
	*loader.Summary
	// Calibration says where H came from (nil: the codec does not use it).
	Calibration *calibInfo `json:"calibration,omitempty"`
}

// calibInfo describes the calibration statistics used.
type calibInfo struct {
	Protocol   string  `json:"protocol,omitempty"` // onepass or sequential
	Text       string  `json:"text,omitempty"`
	Tokens     int64   `json:"tokens"` // 0: none, H = I
	Windows    int     `json:"windows,omitempty"`
	SinkWeight float64 `json:"sink_weight,omitempty"`
	Cached     bool    `json:"cached"`
	Note       string  `json:"note,omitempty"`
	// Seconds: time spent collecting H (sequential: the block runs, not the coding).
	Seconds float64 `json:"seconds,omitempty"`
}

// usesCalibration reports whether a codec uses H (unknown names: no; the
// compression itself then says the name is unknown).
// groupCodec applies --group and --act-order to a codec name: group g
// turns rtn-gN or gptq-gN into rtn-gG or gptq-gG, act-order appends
// gptq's ":act" argument.
func groupCodec(name string, group int, act bool) (string, error) {
	base, arg, hasArg := strings.Cut(name, ":")
	family, _, grouped := strings.Cut(base, "-g")
	if group != 0 {
		if !grouped || (family != "rtn" && family != "gptq") {
			return "", fmt.Errorf("--group %d needs --codec rtn-gN or gptq-gN, not %s", group, name)
		}
		if !slices.Contains(rtn.Groups, group) {
			return "", fmt.Errorf("--group %d: want one of %v", group, rtn.Groups)
		}
		base = fmt.Sprintf("%s-g%d", family, group)
	}
	if act {
		if !grouped || family != "gptq" || (hasArg && arg != gptq.ArgActOrder) {
			return "", fmt.Errorf("--act-order needs --codec gptq-gN, not %s", name)
		}
		arg, hasArg = gptq.ArgActOrder, true
	}
	if hasArg {
		return base + ":" + arg, nil
	}
	return base, nil
}

func usesCalibration(name string) bool {
	c, _, err := codec.Lookup(name)
	return err == nil && c.Calibration
}
