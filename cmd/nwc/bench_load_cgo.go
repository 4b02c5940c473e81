//go:build cgo

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nwc-project/nwc/eval/calib"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/loader/stage"
	"github.com/nwc-project/nwc/loader/tensor"
	"github.com/nwc-project/nwc/ortcodec"
	"github.com/nwc-project/nwc/plugin/llama"
)

func runBenchLoad(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench load", flag.ContinueOnError)
	model := fs.String("model", "smollm2-135m", "reference model (its GGUF is the baseline)")
	nwcFile := fs.String("nwc", "", ".nwc files compressed from the model, comma-separated (default: --codec's, compressed and cached like bench decode)")
	codecName := fs.String("codec", "", "codecs of the .nwc files, comma-separated, one row each (default: the trained codec `nwc compress --codec nwc --bits 4` picks)")
	stFile := fs.String("st", "", "safetensors file or Hugging Face folder decoded from the .nwc (default: `nwc decompress --format safetensors` of it, cached)")
	threads := fs.Int("threads", 0, "ONNX Runtime intra-op threads of the model session (0 = its default)")
	repeat := fs.Int("repeat", 3, "runs per source (each in a fresh process, interleaved gguf, nwc, safetensors, ...); medians are reported")
	outDir := fs.String("out", "docs/results", "directory for the report")
	name := fs.String("name", "", "report file stem (default load-<model>)")
	child := fs.String(childFlag, "", "internal: load KIND:PATH and print the result as JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *child != "" {
		kind, path, ok := strings.Cut(*child, ":")
		if !ok {
			return fmt.Errorf("bench load: --child %q: want KIND:PATH", *child)
		}
		run, err := loadOnce(kind, path, *threads)
		if err != nil {
			return err
		}
		return writeJSON(os.Stdout, run)
	}
	if *repeat < 1 || *repeat > 100 {
		return fmt.Errorf("bench load: --repeat %d outside 1..100", *repeat)
	}
	gguf, err := loader.Resolve(*model)
	if err != nil {
		return err
	}
	var nwcFiles []string
	if *nwcFile != "" {
		nwcFiles = strings.Split(*nwcFile, ",")
	} else {
		if *codecName == "" {
			c, err := ortcodec.ForBits(nil, 4)
			if err != nil {
				return fmt.Errorf("bench load: %w", err)
			}
			*codecName = c.Name
		}
		specs, err := parseCodecSpecs(*codecName, ortcodec.List(nil))
		if err != nil {
			return err
		}
		co := compressCache{model: *model, calibTokens: calib.DefaultTokens, sinkWeight: calib.DefaultSinkWeight}
		for _, sp := range specs {
			f, err := co.file(ctx, sp)
			if err != nil {
				return err
			}
			nwcFiles = append(nwcFiles, f)
		}
	}
	if *stFile == "" {
		if *stFile, err = decompressCached(ctx, nwcFiles[0]); err != nil {
			return err
		}
	}
	if *name == "" {
		*name = "load-" + filepath.Base(*model)
	}
	stem := filepath.Join(*outDir, *name)
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return fmt.Errorf("bench load: %w", err)
	}
	sources := []struct{ kind, path string }{{loadGGUF, gguf}}
	for _, f := range nwcFiles {
		sources = append(sources, struct{ kind, path string }{loadNWC, f})
	}
	sources = append(sources, struct{ kind, path string }{loadST, *stFile})
	runs := make([][]loadRun, len(sources))
	failed := make([]error, len(sources))
	for r := 0; r < *repeat; r++ {
		for i, s := range sources {
			if failed[i] != nil {
				continue
			}
			var run loadRun
			rss, err := runChild(ctx, []string{"bench", "load", "--" + childFlag, s.kind + ":" + s.path, "--threads", fmt.Sprint(*threads)}, &run)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				fmt.Fprintf(os.Stderr, "bench load: %s: %v\n", s.kind, err)
				failed[i] = err
				continue
			}
			run.PeakRSS = childPeak(run.PeakRSS, rss)
			rss = run.PeakRSS
			runs[i] = append(runs[i], run)
			fmt.Fprintf(os.Stderr, "[%d/%d] %s: ready in %.2f s (open %.2f, init %.2f, weights %.2f, session %.2f), peak RSS %.0f MB\n",
				r*len(sources)+i+1, *repeat*len(sources), s.kind, run.ReadySeconds, run.OpenSeconds, run.InitSeconds, run.WeightsSeconds, run.SessionSeconds, float64(rss)/1e6)
		}
	}
	rep := &loadReport{benchMeta: newBenchMeta("time to a ready model", *model, "load", args, *repeat)}
	for i, s := range sources {
		if failed[i] != nil || len(runs[i]) == 0 {
			msg := fmt.Sprint(failed[i])
			if ce := (*childError)(nil); errors.As(failed[i], &ce) {
				msg = ce.Message()
			}
			rep.Rows = append(rep.Rows, loadRow{loadRun: loadRun{Kind: s.kind, File: filepath.Base(s.path)}, Error: tail(msg, 300)})
			continue
		}
		row := newLoadRow(runs[i])
		row.File = filepath.Base(row.File)
		rep.Rows = append(rep.Rows, row)
	}
	rep.ratios()
	rep.Notes = []string{
		"Every run is a fresh process (`bench load --child KIND:PATH`) doing what `nwc eval` does before scoring: loader.Open, then plugin/llama builds the ONNX graph from the weights (read through the prefetcher, so decoding overlaps laying out the graph) and creates the ONNX Runtime session. Sources are run interleaved (gguf, nwc, safetensors, gguf, ...), medians over the runs; the phases are those of the run with the median ready time.",
		"open: loader.Open (header, index, assets); init: architecture config and ONNX Runtime initialization up to the first weight; weights: first to last weight handed to the graph builder; session: last weight to ready (graph serialization, session creation).",
		"safetensors: the Hugging Face folder `nwc decompress --format safetensors` writes from the .nwc file (float32 model.safetensors, config.json, tokenizer files), cached.",
		"peak RSS: the child process's own high-water mark (VmHWM on Linux, else ru_maxrss).",
	}
	for i, s := range sources {
		if failed[i] != nil {
			rep.Notes = append(rep.Notes, fmt.Sprintf("%s: the runtime could not load %s (the error is in the table)%s.", s.kind, filepath.Base(s.path), loadFailureHint(s.kind, failed[i])))
		}
	}
	if err := writeReportFiles(stem, rep.WriteMarkdown, rep, rep.plot); err != nil {
		return err
	}
	fmt.Printf("wrote %s.md, %s.json, %s.png\n", stem, stem, stem)
	return rep.WriteMarkdown(os.Stdout)
}

// loadOnce opens path and builds the runtime's model from it, timing the
// phases; the model is closed again.
func loadOnce(kind, path string, threads int) (*loadRun, error) {
	run := &loadRun{Kind: kind, File: path}
	if st, err := os.Stat(path); err == nil {
		run.FileBytes = st.Size()
	}
	t0 := time.Now()
	src, _, err := loader.Open(path, codec.Env{})
	if err != nil {
		return nil, err
	}
	defer src.Close()
	opened := time.Now()
	var times stage.Times
	var s tensor.Source = src
	if nf, ok := src.(*loader.NWCFile); ok {
		s = &stagedSource{NWCFile: nf, times: &times}
	}
	var first, last time.Time
	opts := llama.Options{Threads: threads,
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "nwc: "+format+"\n", args...) },
		Build: llama.BuildOptions{Weight: func(_ string, v []float32) {
			now := time.Now()
			if first.IsZero() {
				first = now
			}
			last = now
			run.Weights += int64(len(v))
		}}}
	m, err := llama.OpenSource(s, opts)
	if err != nil {
		return nil, err
	}
	ready := time.Now()
	if err := m.Close(); err != nil {
		return nil, err
	}
	if first.IsZero() {
		return nil, errors.New("bench load: the runtime read no weight")
	}
	run.ReadySeconds = ready.Sub(t0).Seconds()
	run.OpenSeconds = opened.Sub(t0).Seconds()
	run.InitSeconds = first.Sub(opened).Seconds()
	run.WeightsSeconds = last.Sub(first).Seconds()
	run.SessionSeconds = ready.Sub(last).Seconds()
	run.Stages = secondsOf(&times)
	run.PeakRSS = selfPeakRSS()
	return run, nil
}

// decompressCached writes the Hugging Face folder (model.safetensors,
// config.json, tokenizer files) decoded from a .nwc file into
// $NWC_CACHE/bench (once) and returns its path.
func decompressCached(ctx context.Context, nwcPath string) (string, error) {
	st, err := os.Stat(nwcPath)
	if err != nil {
		return "", fmt.Errorf("bench load: %w", err)
	}
	base := strings.TrimSuffix(filepath.Base(nwcPath), ".nwc")
	out := filepath.Join(refmodel.CacheDir(), "bench", fmt.Sprintf("%s-%d-%d-hf", base, st.Size(), st.ModTime().Unix()))
	if _, err := os.Stat(filepath.Join(out, "config.json")); err == nil {
		return out, nil
	}
	src, _, err := loader.Open(nwcPath, codec.Env{})
	if err != nil {
		return "", err
	}
	defer src.Close()
	fmt.Fprintf(os.Stderr, "bench: decompressing %s into %s\n", nwcPath, out)
	if err := loader.WriteHF(ctx, src, out, loader.ExportOptions{}); err != nil {
		return "", fmt.Errorf("bench load: decompress %s: %w", nwcPath, err)
	}
	return out, nil
}

// loadFailureHint explains a known reason a source does not load.
func loadFailureHint(kind string, err error) string {
	if kind == loadST && strings.Contains(err.Error(), "config") {
		return ": nwc decompress writes the model's metadata beside the file as <file>.gguf-metadata.json, and the safetensors reader collects only Hugging Face asset files (config.json, tokenizer files), so plugin/llama finds no architecture config (docs/LOADING.md, Measuring)"
	}
	return ""
}
