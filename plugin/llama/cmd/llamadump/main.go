//go:build cgo

// Command llamadump runs the nwc Llama runtime on given token ids and writes
// the logits as a .npy file (float32 [seq, vocab]), or prints the mean
// next-token negative log-likelihood over windows. It is a helper for
// scripts/hf_parity.py, not a user-facing command.
//
//	llamadump -model smollm2-135m -tokens ids.txt -out logits.npy
//	llamadump -model smollm2-135m -tokens ids.txt -nll -window 512 [-max-windows 8]
//
// The token file holds whitespace-separated integer ids.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"os"
	"strconv"
	"time"

	"github.com/nwc-project/nwc/plugin/llama"
)

func main() {
	model := flag.String("model", "smollm2-135m", "reference model name or GGUF/safetensors/.nwc path")
	tokPath := flag.String("tokens", "", "file of whitespace-separated token ids")
	out := flag.String("out", "", "write logits of the first window to this .npy file")
	nll := flag.Bool("nll", false, "print the mean next-token NLL over non-overlapping windows")
	window := flag.Int("window", 0, "window length (0: all tokens in one window)")
	maxWin := flag.Int("max-windows", 0, "score at most this many windows (0: all)")
	provider := flag.String("provider", "cpu", "cpu or cuda")
	threads := flag.Int("threads", 0, "intra-op threads (0: ONNX Runtime default)")
	attn := flag.String("attention", "", "attention implementation: standard or gqa (default: the runtime's)")
	weights := flag.String("weights", "", "how weights reach ONNX Runtime: embedded or external (default: by size)")
	flag.Parse()
	opts := llama.Options{Provider: *provider, Threads: *threads, Build: llama.BuildOptions{Attention: *attn}, Weights: *weights}
	if err := run(*model, *tokPath, *out, *nll, *window, *maxWin, opts); err != nil {
		fmt.Fprintln(os.Stderr, "llamadump:", err)
		os.Exit(1)
	}
}

func run(model, tokPath, out string, nll bool, window, maxWin int, opts llama.Options) error {
	if tokPath == "" || (out == "" && !nll) {
		return fmt.Errorf("need -tokens and -out and/or -nll")
	}
	toks, err := readTokens(tokPath)
	if err != nil {
		return err
	}
	t0 := time.Now()
	m, err := llama.Open(model, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintf(os.Stderr, "llamadump: built %s (%d layers, vocab %d) on %s in %.1fs\n", model, m.Config().Layers, m.Vocab(), m.Provider(), time.Since(t0).Seconds())
	if window <= 0 || window > len(toks) {
		window = len(toks)
	}
	ctx := context.Background()
	var sum float64
	var count, windows int
	for start := 0; start+window <= len(toks); start += window {
		if maxWin > 0 && windows >= maxWin {
			break
		}
		w := toks[start : start+window]
		t1 := time.Now()
		logits, err := m.Logits(ctx, w)
		if err != nil {
			return err
		}
		dt := time.Since(t1).Seconds()
		fmt.Fprintf(os.Stderr, "llamadump: window %d: %d tokens in %.2fs (%.0f tokens/s)\n", windows, len(w), dt, float64(len(w))/dt)
		if windows == 0 && out != "" {
			if err := writeNpy(out, logits, len(w), m.Vocab()); err != nil {
				return err
			}
		}
		if nll {
			V := m.Vocab()
			for i := 0; i+1 < len(w); i++ {
				row := logits[i*V : (i+1)*V]
				mx := math.Inf(-1)
				for _, v := range row {
					mx = math.Max(mx, float64(v))
				}
				var se float64
				for _, v := range row {
					se += math.Exp(float64(v) - mx)
				}
				sum += mx + math.Log(se) - float64(row[w[i+1]])
				count++
			}
		}
		windows++
	}
	if nll {
		mean := sum / float64(count)
		fmt.Printf("windows %d window %d predicted %d mean_nll %.6f ppl %.4f\n", windows, window, count, mean, math.Exp(mean))
	}
	return nil
}

func readTokens(path string) ([]int32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	sc.Split(bufio.ScanWords)
	var toks []int32
	for sc.Scan() {
		v, err := strconv.ParseInt(sc.Text(), 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%s: token %d: %w", path, len(toks), err)
		}
		toks = append(toks, int32(v))
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("%s: no tokens", path)
	}
	return toks, nil
}

// writeNpy writes a float32 [rows, cols] array in NumPy .npy format 1.0.
func writeNpy(path string, data []float32, rows, cols int) error {
	header := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols)
	total := 10 + len(header) + 1
	pad := (64 - total%64) % 64
	header += spaces(pad) + "\n"
	buf := make([]byte, 0, 10+len(header)+4*len(data))
	buf = append(buf, 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(header)))
	buf = append(buf, header...)
	for _, v := range data {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
	}
	return os.WriteFile(path, buf, 0o644)
}

func spaces(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = ' '
	}
	return string(b)
}
