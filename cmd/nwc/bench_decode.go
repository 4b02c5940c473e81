package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/ortcodec"
)

const (
	benchUsage       = "usage: nwc bench rd [--model NAME] [--run CODEC[=B1,B2,...]]... [--codecs C1,C2 --bits B1,B2] [--seq-len N] [--max-windows K] [--out DIR] [--name STEM] [--resume]"
	benchEmbedUsage  = "usage: nwc bench embed [--model minilm-l6] [--run CODEC[=B1,B2,...]]... [--sentences N] [--topk K] [--out DIR] [--name STEM] [--resume]"
	benchDecodeUsage = "usage: nwc bench decode [--files A.nwc,B.nwc | --codecs C1,C2,...|shipped] [--model NAME] [--threads N] [--sessions N] [--batch N] [--prefetch N] [--repeat 3] [--sweep KEY=V1,V2 ...] [--out DIR] [--name STEM]"
	benchAllUsage    = benchUsage + "\n       " + benchEmbedUsage + "\n       " + benchDecodeUsage + "\n       " + benchLoadUsage + "\n       " + benchParetoUsage
)

// runBench dispatches the bench subcommands.
func runBench(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "rd":
			return runBenchRD(ctx, args)
		case "embed":
			return runBenchEmbed(ctx, args)
		case "decode":
			return runBenchDecode(ctx, args[1:])
		case "load":
			return runBenchLoad(ctx, args[1:])
		case "pareto":
			return runBenchPareto(ctx, args[1:])
		}
	}
	fmt.Fprintln(os.Stderr, benchAllUsage)
	return errUsage
}

func goMaxProcs() int { return runtime.GOMAXPROCS(0) }

// runList is a repeatable flag (bench rd --run, bench decode --sweep).
type runList []string

func (r *runList) String() string     { return strings.Join(*r, " ") }
func (r *runList) Set(v string) error { *r = append(*r, v); return nil }

// decodeSpec is one file to decode: given, or compressed with a codec.
type decodeSpec struct {
	Label string  // row name: the trained codec's name, CODEC@BITS, or the file's base name
	Codec string  // CompressOptions.Codec ("" with --files)
	Bits  float64 // CompressOptions.Bits
	File  string
}

// shippedBaselines are the codecs `--codecs shipped` measures next to every
// trained codec.
var shippedBaselines = []string{"rtn-g128@4", "ecsq@4", "lossless"}

// parseCodecSpecs reads --codecs: NAME (a trained codec, or a codec that
// takes no bits), nwc:NAME, CODEC@BITS, or "shipped".
func parseCodecSpecs(list string, trained []ortcodec.Info) ([]decodeSpec, error) {
	isTrained := map[string]bool{}
	for _, c := range trained {
		isTrained[c.Name] = true
	}
	var out []decodeSpec
	for _, item := range strings.Split(list, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if item == "shipped" {
			if len(trained) == 0 {
				return nil, fmt.Errorf("bench decode: --codecs shipped: %w", ortcodec.ErrNoCodec)
			}
			var names []string
			for _, c := range trained {
				names = append(names, c.Name)
			}
			more, err := parseCodecSpecs(strings.Join(append(names, shippedBaselines...), ","), trained)
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
			continue
		}
		name, bitsStr, hasBits := strings.Cut(item, "@")
		s := decodeSpec{Label: item, Codec: name}
		if hasBits {
			b, err := strconv.ParseFloat(bitsStr, 64)
			if err != nil || !(b > 0 && b <= 32) {
				return nil, fmt.Errorf("bench decode: --codecs %q: want CODEC@BITS with BITS in (0, 32]", item)
			}
			s.Bits = b
		}
		switch {
		case strings.HasPrefix(name, "nwc:"):
			s.Label = strings.TrimPrefix(name, "nwc:")
		case isTrained[name]:
			s.Codec = "nwc:" + name
		default:
			c, _, err := codec.Lookup(name)
			if err != nil {
				return nil, fmt.Errorf("bench decode: --codecs %q: %w", item, err)
			}
			if c.Lossy && !hasBits && name != "f16" {
				return nil, fmt.Errorf("bench decode: --codecs %q: a lossy codec needs a rate: %s@BITS", item, name)
			}
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("bench decode: no codec given")
	}
	return out, nil
}

// sweepAxis is one knob of --sweep and its values.
type sweepAxis struct {
	key  string
	vals []int
}

// decodeKnobs are the decoder settings of one row.
type decodeKnobs struct {
	Threads  int `json:"threads"`
	Sessions int `json:"sessions"`
	Batch    int `json:"batch"`
	Prefetch int `json:"prefetch"`
}

func (k *decodeKnobs) set(key string, v int) error {
	switch key {
	case "threads":
		k.Threads = v
	case "sessions":
		k.Sessions = v
	case "batch":
		k.Batch = v
	case "prefetch":
		k.Prefetch = v
	default:
		return fmt.Errorf("bench decode: --sweep: unknown knob %q (threads, sessions, batch, prefetch)", key)
	}
	return nil
}

// parseSweep reads KEY=V1,V2 items (threads, sessions, batch, prefetch).
func parseSweep(items []string) ([]sweepAxis, error) {
	var axes []sweepAxis
	seen := map[string]bool{}
	for _, it := range items {
		key, list, ok := strings.Cut(strings.TrimSpace(it), "=")
		if !ok || list == "" {
			return nil, fmt.Errorf("bench decode: --sweep %q: want KEY=V1,V2,...", it)
		}
		if seen[key] {
			return nil, fmt.Errorf("bench decode: --sweep: %s given twice", key)
		}
		seen[key] = true
		ax := sweepAxis{key: key}
		for _, f := range strings.Split(list, ",") {
			v, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || v < 0 || v > 1<<20 {
				return nil, fmt.Errorf("bench decode: --sweep %q: %q is not a count", it, f)
			}
			ax.vals = append(ax.vals, v)
		}
		if err := (&decodeKnobs{}).set(key, 0); err != nil {
			return nil, err
		}
		axes = append(axes, ax)
	}
	return axes, nil
}

// combinations expands the axes over base: one knob set per combination,
// the first axis varying slowest.
func combinations(base decodeKnobs, axes []sweepAxis) []decodeKnobs {
	out := []decodeKnobs{base}
	for _, ax := range axes {
		var next []decodeKnobs
		for _, k := range out {
			for _, v := range ax.vals {
				k2 := k
				_ = k2.set(ax.key, v) // keys were checked by parseSweep
				next = append(next, k2)
			}
		}
		out = next
	}
	return out
}

// childArgs are the arguments of the child that decodes file with knobs k.
func (k decodeKnobs) childArgs(file, provider string) []string {
	return []string{"bench", "decode", "--" + childFlag, file, "--provider", provider,
		"--threads", strconv.Itoa(k.Threads), "--sessions", strconv.Itoa(k.Sessions),
		"--batch", strconv.Itoa(k.Batch), "--prefetch", strconv.Itoa(k.Prefetch)}
}

func runBenchDecode(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench decode", flag.ContinueOnError)
	files := fs.String("files", "", "comma-separated .nwc files to decode (instead of --codecs)")
	codecs := fs.String("codecs", "shipped", "comma-separated codecs: a trained codec's name (or nwc:NAME), CODEC@BITS (rtn-g128@4, ecsq@4), lossless, f16; shipped = every trained codec + "+strings.Join(shippedBaselines, ", "))
	model := fs.String("model", "smollm2-135m", "model the --codecs files are compressed from")
	var k decodeKnobs
	fs.IntVar(&k.Threads, "threads", 0, "ONNX Runtime intra-op threads of the decoder (0 = its default)")
	fs.IntVar(&k.Sessions, "sessions", 0, "decoder sessions run in parallel (0 = the codec's default)")
	fs.IntVar(&k.Batch, "batch", 0, "chunks per decoder run (0 = the codec's default)")
	fs.IntVar(&k.Prefetch, "prefetch", 0, "tensors decoded ahead in the background (0 = one at a time, so the stages add up to the wall time)")
	provider := fs.String("provider", "cpu", "ONNX Runtime execution provider of the decoder: cpu or cuda")
	repeat := fs.Int("repeat", 3, "runs per row (each in a fresh process, interleaved); medians are reported")
	var sweep runList
	fs.Var(&sweep, "sweep", "KEY=V1,V2 (threads, sessions, batch, prefetch): one row per combination, for one codec; further KEY=... may follow as arguments")
	outDir := fs.String("out", "docs/results", "directory for the report")
	name := fs.String("name", "", "report file stem (default decode-<model>, or decode-sweep-<model>)")
	child := fs.String(childFlag, "", "internal: decode this file and print the result as JSON")
	calibTokens := fs.Int("calib-tokens", calib.DefaultTokens, "calibration tokens for the codecs that use H (gptq, ecsq, nwc)")
	sinkWeight := fs.Float64("sink-weight", calib.DefaultSinkWeight, "weight of the first token of every calibration window in H")
	noCalib := fs.Bool("no-calib", false, "compress with H = I (no calibration)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	env := codec.Env{Provider: *provider, Threads: k.Threads, Sessions: k.Sessions, Batch: k.Batch}
	if *child != "" {
		run, err := decodeFile(ctx, *child, env, k.Prefetch)
		if err != nil {
			return err
		}
		return writeJSON(os.Stdout, run)
	}
	for _, p := range pos {
		if !strings.Contains(p, "=") {
			return fmt.Errorf("bench decode: unexpected argument %q", p)
		}
		sweep = append(sweep, p)
	}
	axes, err := parseSweep(sweep)
	if err != nil {
		return err
	}
	if *repeat < 1 || *repeat > 100 {
		return fmt.Errorf("bench decode: --repeat %d outside 1..100", *repeat)
	}
	if k.Threads < 0 || k.Sessions < 0 || k.Batch < 0 || k.Prefetch < 0 {
		return errors.New("bench decode: --threads, --sessions, --batch and --prefetch are counts (>= 0)")
	}
	var specs []decodeSpec
	codecsSet := false
	fs.Visit(func(f *flag.Flag) { codecsSet = codecsSet || f.Name == "codecs" })
	switch {
	case *files != "" && codecsSet:
		return errors.New("bench decode: give --files or --codecs, not both")
	case *files != "":
		for _, f := range strings.Split(*files, ",") {
			if f = strings.TrimSpace(f); f != "" {
				specs = append(specs, decodeSpec{Label: strings.TrimSuffix(filepath.Base(f), ".nwc"), File: f})
			}
		}
	default:
		if specs, err = parseCodecSpecs(*codecs, ortcodec.List(nil)); err != nil {
			return err
		}
	}
	if len(axes) > 0 && len(specs) != 1 {
		return fmt.Errorf("bench decode: --sweep measures one codec or file, got %d", len(specs))
	}
	stem := *name
	if stem == "" {
		stem = "decode-" + filepath.Base(*model)
		if len(axes) > 0 {
			stem = "decode-sweep-" + filepath.Base(*model)
		}
		if *files != "" {
			stem = "decode-files"
		}
	}
	stem = filepath.Join(*outDir, stem)
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return fmt.Errorf("bench decode: %w", err)
	}
	if *files == "" {
		co := compressCache{model: *model, calibTokens: *calibTokens, sinkWeight: *sinkWeight, noCalib: *noCalib}
		for i := range specs {
			if specs[i].File, err = co.file(ctx, specs[i]); err != nil {
				return err
			}
		}
	}
	rep := &decodeReport{benchMeta: newBenchMeta("decode speed", *model, "decode", args, *repeat), Sweep: len(axes) > 0}
	if *files != "" {
		rep.Model = ""
	}
	rows, err := measureDecode(ctx, specs, combinations(k, axes), *provider, *repeat)
	if err != nil {
		return err
	}
	rep.Rows = rows
	rep.notes()
	for _, ax := range axes {
		if ax.key == "sessions" || ax.key == "batch" {
			rep.Notes = append(rep.Notes, "--sweep "+ax.key+": the knob reaches the decoder as codec.Env."+strings.ToUpper(ax.key[:1])+ax.key[1:]+"; rows differ only where the codec reads it (the nwc decoder: ortcodec.WithSessions / WithBatch).")
		}
	}
	if err := rep.write(stem); err != nil {
		return err
	}
	fmt.Printf("wrote %s.md, %s.json, %s.png\n", stem, stem, stem)
	return rep.WriteMarkdown(os.Stdout)
}

// measureDecode runs every spec with every knob set repeat times, each run
// in a child process, interleaved (all configurations once, then again), and
// returns one row of medians per configuration.
func measureDecode(ctx context.Context, specs []decodeSpec, knobs []decodeKnobs, provider string, repeat int) ([]decodeRow, error) {
	type config struct {
		spec  decodeSpec
		knobs decodeKnobs
		runs  []decodeRun
	}
	var cfgs []*config
	for _, s := range specs {
		for _, k := range knobs {
			cfgs = append(cfgs, &config{spec: s, knobs: k})
		}
	}
	for r := 0; r < repeat; r++ {
		for i, c := range cfgs {
			var run decodeRun
			rss, err := runChild(ctx, c.knobs.childArgs(c.spec.File, provider), &run)
			if err != nil {
				return nil, fmt.Errorf("bench decode: %s: %w", c.spec.Label, err)
			}
			run.PeakRSS = childPeak(run.PeakRSS, rss)
			rss = run.PeakRSS
			c.runs = append(c.runs, run)
			fmt.Fprintf(os.Stderr, "[%d/%d] %s %+v: %.2f s, %.1f M weights/s, peak RSS %.0f MB\n", r*len(cfgs)+i+1, repeat*len(cfgs),
				c.spec.Label, c.knobs, run.WallSeconds, float64(run.Weights)/run.WallSeconds/1e6, float64(rss)/1e6)
		}
	}
	var rows []decodeRow
	for _, c := range cfgs {
		rows = append(rows, newDecodeRow(c.spec, c.knobs, c.runs))
	}
	return rows, nil
}

// compressCache produces the .nwc file of a codec under
// $NWC_CACHE/bench/<model>-<label>-<hash>.nwc, the hash covering
// everything the file depends on, so that reruns do not recompress.
type compressCache struct {
	model       string
	calibTokens int
	sinkWeight  float64
	noCalib     bool
	hess        loader.HessianFunc
	hessDone    bool
}

// identity is what a cached file depends on.
func (c *compressCache) identity(s decodeSpec) (string, error) {
	path, err := loader.Resolve(c.model)
	if err != nil {
		return "", err
	}
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("bench decode: %w", err)
	}
	id := fmt.Sprintf("v1 model=%s size=%d mtime=%d codec=%s bits=%g", filepath.Base(path), st.Size(), st.ModTime().Unix(), s.Codec, s.Bits)
	if usesCalibration(s.Codec) {
		id += fmt.Sprintf(" calib=%d sink=%g none=%v", c.calibTokens, c.sinkWeight, c.noCalib)
	}
	if name, ok := strings.CutPrefix(s.Codec, "nwc:"); ok {
		fsys, n, err := ortcodec.Resolve(nil, name)
		if err != nil {
			return "", fmt.Errorf("bench decode: %w", err)
		}
		ident, err := ortcodec.Identify(fsys, n)
		if err != nil {
			return "", fmt.Errorf("bench decode: %w", err)
		}
		id += " nwc=" + hex.EncodeToString(ident.Hash[:])
	}
	return id, nil
}

// cachePath is where the file of spec s lives in the cache.
func (c *compressCache) cachePath(s decodeSpec) (string, error) {
	id, err := c.identity(s)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(id))
	label := strings.Map(func(r rune) rune {
		if r == '/' || r == ':' || r == ' ' || r == os.PathSeparator {
			return '_'
		}
		return r
	}, s.Label)
	return filepath.Join(refmodel.CacheDir(), "bench", fmt.Sprintf("%s-%s-%s.nwc", filepath.Base(c.model), label, hex.EncodeToString(h[:6]))), nil
}

// file returns the cached file of s, compressing it first when missing.
func (c *compressCache) file(ctx context.Context, s decodeSpec) (string, error) {
	path, err := c.cachePath(s)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		fmt.Fprintf(os.Stderr, "bench: %s: cached %s\n", s.Label, path)
		return path, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("bench decode: %w", err)
	}
	src, _, err := loader.Open(c.model, codec.Env{})
	if err != nil {
		return "", err
	}
	defer src.Close()
	opts := loader.CompressOptions{Codec: s.Codec, Bits: s.Bits}
	if usesCalibration(s.Codec) {
		if !c.hessDone {
			h, _, err := calibrationFor(ctx, src, c.noCalib, c.calibTokens, c.sinkWeight, lmFlags{ortFlags: ortFlags{provider: "cpu"}}, true)
			if err != nil {
				return "", err
			}
			c.hess, c.hessDone = h, true
		}
		opts.Hessian = c.hess
	}
	fmt.Fprintf(os.Stderr, "bench: %s: compressing %s into %s\n", s.Label, c.model, path)
	tmp := path + ".tmp"
	sum, err := loader.Compress(ctx, src, tmp, opts)
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("bench decode: %s: %w", s.Label, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("bench decode: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: %s: %.3f bits/weight (block linears), %.0f s\n", s.Label, sum.LinearBitsPerWeight, sum.Seconds)
	return path, nil
}

// median returns the median of v (the lower middle for an even count).
func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[(len(s)-1)/2]
}

// medianIndex returns the index of the run whose value is the median.
func medianIndex(v []float64) int {
	m := median(v)
	for i, x := range v {
		if x == m {
			return i
		}
	}
	return 0
}

// stageRow is one stage of a decode row.
type stageRow struct {
	Stage   string  `json:"stage"`
	Seconds float64 `json:"seconds"`
	// WeightsPerSecond is every decoded weight over this stage's time: the
	// rate the decode would reach if this stage were its only cost.
	WeightsPerSecond float64 `json:"weights_per_second,omitempty"`
	NsPerWeight      float64 `json:"ns_per_weight"`
}

// decodeRow is one configuration of `nwc bench decode`: medians of its runs.
type decodeRow struct {
	Codec      string  `json:"codec"`
	File       string  `json:"file"`
	Codecs     string  `json:"section_codecs"`
	LinearBits float64 `json:"linear_bits_per_weight"`
	FileBytes  int64   `json:"file_bytes"`
	decodeKnobs
	Tensors       int     `json:"tensors"`
	Weights       int64   `json:"weights"`
	LinearWeights int64   `json:"linear_weights"`
	OpenSeconds   float64 `json:"open_seconds"`
	WallSeconds   float64 `json:"wall_seconds"`
	// WeightsPerSecond: all weights over the median wall time (open not
	// counted); LinearWeightsPerSecond: the block linears over the time
	// spent on them.
	WeightsPerSecond       float64    `json:"weights_per_second"`
	LinearWeightsPerSecond float64    `json:"linear_weights_per_second"`
	Stages                 []stageRow `json:"stages"` // of the run with the median wall time
	// OtherSeconds is the wall time no stage accounts for (the loop, GC,
	// allocation, and stages a decoder does not time); 0 when negative
	// (with --prefetch the stages overlap).
	OtherSeconds float64   `json:"other_seconds"`
	PeakRSS      int64     `json:"peak_rss_bytes"`
	Runs         []float64 `json:"wall_seconds_runs"`
	GOMAXPROCS   int       `json:"gomaxprocs"`
}

func newDecodeRow(s decodeSpec, k decodeKnobs, runs []decodeRun) decodeRow {
	walls, lins, rss := make([]float64, len(runs)), make([]float64, len(runs)), make([]float64, len(runs))
	for i, r := range runs {
		walls[i], lins[i], rss[i] = r.WallSeconds, r.LinearSeconds, float64(r.PeakRSS)
	}
	m := runs[medianIndex(walls)]
	row := decodeRow{Codec: s.Label, File: s.File, Codecs: strings.Join(m.Codecs, "+"), LinearBits: m.LinearBits, FileBytes: m.FileBytes,
		decodeKnobs: k, Tensors: m.Tensors, Weights: m.Weights, LinearWeights: m.LinearWeights, OpenSeconds: m.OpenSeconds,
		WallSeconds: median(walls), PeakRSS: int64(median(rss)), Runs: walls, GOMAXPROCS: m.GOMAXPROCS}
	if row.WallSeconds > 0 {
		row.WeightsPerSecond = float64(row.Weights) / row.WallSeconds
	}
	if l := median(lins); l > 0 {
		row.LinearWeightsPerSecond = float64(row.LinearWeights) / l
	}
	for i, sec := range m.Stages {
		sr := stageRow{Stage: stage.Stage(i).String(), Seconds: sec}
		if sec > 0 {
			sr.WeightsPerSecond = float64(m.Weights) / sec
		}
		if m.Weights > 0 {
			sr.NsPerWeight = sec * 1e9 / float64(m.Weights)
		}
		row.Stages = append(row.Stages, sr)
	}
	row.OtherSeconds = max(m.WallSeconds-m.Stages.sum(), 0)
	return row
}
