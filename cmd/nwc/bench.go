package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/nwc-project/nwc/eval"
	"github.com/nwc-project/nwc/eval/report"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "rd" {
		fmt.Fprintln(os.Stderr, "usage: nwc bench rd [--model NAME] [--codecs rtn-g128,rtn-row] [--bits 2,3,4,5,6,8] [--seq-len N] [--max-windows K] [--out DIR]")
		return errUsage
	}
	fs := flag.NewFlagSet("bench rd", flag.ContinueOnError)
	model := fs.String("model", "smollm2-135m", "reference model")
	codecs := fs.String("codecs", "rtn-g128,rtn-row", "comma-separated codecs")
	bitsList := fs.String("bits", "2,3,4,5,6,8", "comma-separated bit widths")
	seqLen := fs.Int("seq-len", eval.DefaultSeqLen, "window length")
	maxWin := fs.Int("max-windows", 4, "windows evaluated per point (0 = the whole text)")
	outDir := fs.String("out", "docs/results", "directory for rd-<model>.{md,json,png}")
	name := fs.String("name", "", "report file stem (default rd-<model>)")
	var lf lmFlags
	lf.register(fs)
	if _, err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	var bits []float64
	for _, s := range strings.Split(*bitsList, ",") {
		b, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return fmt.Errorf("bench: --bits: %w", err)
		}
		bits = append(bits, b)
	}
	if *name == "" {
		*name = "rd-" + filepath.Base(*model)
	}
	src, _, err := loader.Open(*model)
	if err != nil {
		return err
	}
	defer src.Close()
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		return err
	}
	defer tok.Close()
	refModel, _, err := openLM(*model, lf)
	if err != nil {
		return err
	}
	defer refModel.Close()
	ref := &memoLM{LM: refModel, cache: map[uint64][]float32{}}
	tmp, err := os.MkdirTemp("", "nwc-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	rep := &report.Report{
		Title:   fmt.Sprintf("%s: bits/weight vs quality", *model),
		Model:   *model,
		Text:    "WikiText-2 test (GPTQ convention)",
		SeqLen:  *seqLen,
		Command: "bin/nwc " + strings.Join(append([]string{"bench"}, args...), " "),
	}
	opts := eval.Options{SeqLen: *seqLen, MaxWindows: *maxWin}
	base, err := eval.Evaluate(ctx, ref, nil, tok, eval.Config{Model: *model, Options: opts})
	if err != nil {
		return err
	}
	rep.RefPerplexity, rep.Windows = base.Perplexity, base.Windows
	fmt.Fprintf(os.Stderr, "reference %s: perplexity %.4f over %d tokens\n", *model, base.Perplexity, base.TokensScored)
	for _, c := range strings.Split(*codecs, ",") {
		for _, b := range bits {
			path := filepath.Join(tmp, fmt.Sprintf("%s-%g.nwc", c, b))
			if _, err := loader.Compress(ctx, src, path, loader.CompressOptions{Codec: c, Bits: b}); err != nil {
				return fmt.Errorf("bench: %s %g bits: %w", c, b, err)
			}
			nf, err := loader.OpenNWC(path)
			if err != nil {
				return err
			}
			lb, fileBits := linearBits(nf), 8*float64(nf.Container().Size())/float64(weights(nf))
			nf.Close()
			lm, _, err := openLM(path, lf)
			if err != nil {
				return err
			}
			r, err := eval.Evaluate(ctx, lm, ref, tok, eval.Config{Model: path, Reference: *model, Options: opts})
			lm.Close()
			os.Remove(path)
			if err != nil {
				return fmt.Errorf("bench: %s %g bits: %w", c, b, err)
			}
			p := report.Point{Method: c, Setting: fmt.Sprintf("%g bits", b), BitsPerWeight: lb, FileBits: fileBits,
				Perplexity: r.Perplexity, Tokens: int(r.TokensScored)}
			if r.MeanKL != nil {
				p.MeanKL = *r.MeanKL
			}
			rep.Points = append(rep.Points, p)
			fmt.Fprintf(os.Stderr, "%-10s %4g bits: %.3f bits/weight, perplexity %.4f, KL %.5f\n", c, b, lb, p.Perplexity, p.MeanKL)
		}
	}
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return err
	}
	stem := filepath.Join(*outDir, *name)
	for ext, write := range map[string]func(*os.File) error{
		".md":   func(f *os.File) error { return rep.WriteMarkdown(f) },
		".json": func(f *os.File) error { return rep.WriteJSON(f) },
	} {
		f, err := os.Create(stem + ext)
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if err := rep.WritePlot(stem + ".png"); err != nil {
		return err
	}
	fmt.Printf("wrote %s.md, %s.json, %s.png\n", stem, stem, stem)
	return rep.WriteMarkdown(os.Stdout)
}

func weights(nf *loader.NWCFile) int64 {
	var n int64
	for _, ti := range nf.Tensors() {
		n += ti.NumElements()
	}
	return n
}

// memoLM remembers the logits of every window it has computed, so that the
// reference model runs once per window however many candidates are compared
// with it.
type memoLM struct {
	eval.LM
	mu    sync.Mutex
	cache map[uint64][]float32
}

func (m *memoLM) Logits(ctx context.Context, tokens []int32) ([]float32, error) {
	h := fnv.New64a()
	var b [4]byte
	for _, t := range tokens {
		binary.LittleEndian.PutUint32(b[:], uint32(t))
		h.Write(b[:])
	}
	key := h.Sum64()
	m.mu.Lock()
	l, ok := m.cache[key]
	m.mu.Unlock()
	if ok {
		return l, nil
	}
	l, err := m.LM.Logits(ctx, tokens)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.cache[key] = l
	m.mu.Unlock()
	return l, nil
}
