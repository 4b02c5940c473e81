//go:build cgo

package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/plugin/chat"
	"github.com/nwc-project/nwc/plugin/llama"
	"github.com/nwc-project/nwc/plugin/tokenizer"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// generateJSON is what `nwc generate --json` prints.
type generateJSON struct {
	Model          string  `json:"model"`
	Provider       string  `json:"provider"`
	Prompt         string  `json:"prompt"`
	PromptIDs      []int32 `json:"prompt_ids"`
	TokenIDs       []int32 `json:"token_ids"`
	Text           string  `json:"text"`
	StopReason     string  `json:"stop_reason"`
	LoadSeconds    float64 `json:"load_seconds"`
	PrefillSeconds float64 `json:"prefill_seconds"`
	DecodeSeconds  float64 `json:"decode_seconds"`
	PrefillTPS     float64 `json:"prefill_tokens_per_second"`
	DecodeTPS      float64 `json:"decode_tokens_per_second"`
}

func runGenerate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("generate", flag.ContinueOnError)
	model := fs.String("model", "", "model: reference name, GGUF, safetensors or .nwc path")
	prompt := fs.String("prompt", "", "prompt text (default: read from stdin)")
	useChat := fs.Bool("chat", false, "apply the model's chat template: the prompt is one user message, followed by the assistant's turn")
	system := fs.String("system", "", "with --chat: a system message before the prompt")
	maxTok := fs.Int("max-tokens", 128, "most tokens to generate")
	temp := fs.Float64("temperature", 0, "sampling temperature (0 = greedy)")
	topK := fs.Int("top-k", 0, "sample from the K most likely tokens (0 = all)")
	topP := fs.Float64("top-p", 1, "sample from the smallest set of tokens whose probability reaches P (1 = all)")
	seed := fs.Uint64("seed", 0, "sampling seed (the same seed gives the same text)")
	ignoreEOS := fs.Bool("ignore-eos", false, "do not stop at the model's end-of-sequence token")
	var stops stringList
	fs.Var(&stops, "stop", "stop string (repeatable)")
	asJSON := fs.Bool("json", false, "print a JSON record (token ids, text, timings) instead of streaming the text")
	var lf ortFlags
	lf.register(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 || *model == "" {
		fmt.Fprintln(os.Stderr, "usage: nwc generate --model NAME|PATH [--prompt TEXT | stdin] [--chat [--system TEXT]] [--max-tokens N] [--temperature T --top-k K --top-p P --seed S] [--stop STR]... [--ignore-eos] [--json]")
		return errUsage
	}
	if *maxTok <= 0 || *temp < 0 || *topK < 0 || *topP <= 0 || *topP > 1 {
		return fmt.Errorf("generate: need --max-tokens > 0, --temperature >= 0, --top-k >= 0, 0 < --top-p <= 1")
	}
	if err := lf.init(); err != nil {
		return err
	}
	text := *prompt
	if text == "" {
		data, err := io.ReadAll(bufio.NewReader(os.Stdin))
		if err != nil {
			return fmt.Errorf("generate: read the prompt from stdin: %w", err)
		}
		text = strings.TrimRight(string(data), "\n")
	}
	if text == "" {
		return errors.New("generate: empty prompt")
	}

	start := time.Now()
	src, _, err := loader.Open(*model, lf.env())
	if err != nil {
		return err
	}
	defer src.Close()
	tok, err := tokenizer.ForSource(src)
	if err != nil {
		return err
	}
	defer tok.Close()
	if *useChat {
		tmpl, err := chat.FromSource(src)
		if err != nil {
			return fmt.Errorf("generate --chat: %w", err)
		}
		var msgs []chat.Message
		if *system != "" {
			msgs = append(msgs, chat.Message{Role: "system", Content: *system})
		}
		msgs = append(msgs, chat.Message{Role: "user", Content: text})
		if text, err = tmpl.Render(msgs, true); err != nil {
			return err
		}
	}
	var stopIDs []int32
	if !*ignoreEOS {
		if stopIDs, err = chat.StopTokens(src); err != nil {
			return err
		}
	}
	ids, err := tok.Encode(text)
	if err != nil {
		return err
	}
	dec, err := llama.OpenDecoderSource(src, llama.Options{Provider: lf.provider, Threads: lf.threads,
		Logf: func(format string, args ...any) { fmt.Fprintf(os.Stderr, "nwc: "+format+"\n", args...) }})
	if err != nil {
		return err
	}
	defer dec.Close()
	load := time.Since(start).Seconds()
	if !*asJSON {
		fmt.Fprintf(os.Stderr, "nwc: %s loaded in %.1fs (%s); prompt %d tokens\n", *model, load, dec.Provider(), len(ids))
	}

	opts := llama.GenerateOptions{
		MaxTokens:   *maxTok,
		Sampling:    llama.Sampling{Temperature: *temp, TopK: *topK, TopP: *topP, Seed: *seed},
		StopTokens:  stopIDs,
		StopStrings: stops,
		Detokenize:  tok.Decode,
	}
	out := bufio.NewWriter(os.Stdout)
	if !*asJSON {
		opts.OnToken = func(t llama.Token) error {
			if _, err := out.WriteString(t.Text); err != nil {
				return err
			}
			return out.Flush()
		}
	}
	res, err := dec.Generate(ctx, ids, opts)
	if res == nil {
		return err
	}
	prefillTPS := float64(len(ids)) / res.Prefill.Seconds()
	decodeTPS := 0.0
	if res.DecodeSteps > 0 && res.Decode > 0 {
		decodeTPS = float64(res.DecodeSteps) / res.Decode.Seconds()
	}
	if *asJSON {
		if err != nil {
			return err
		}
		return writeJSON(os.Stdout, generateJSON{Model: *model, Provider: dec.Provider(), Prompt: text, PromptIDs: ids,
			TokenIDs: res.Tokens, Text: res.Text, StopReason: res.StopReason, LoadSeconds: load,
			PrefillSeconds: res.Prefill.Seconds(), DecodeSeconds: res.Decode.Seconds(), PrefillTPS: prefillTPS, DecodeTPS: decodeTPS})
	}
	out.WriteString("\n")
	out.Flush()
	fmt.Fprintf(os.Stderr, "nwc: prefill %d tokens in %.2fs (%.1f tokens/s); generated %d tokens, %d decode steps in %.2fs (%.1f tokens/s); stop: %s\n",
		len(ids), res.Prefill.Seconds(), prefillTPS, len(res.Tokens), res.DecodeSteps, res.Decode.Seconds(), decodeTPS, res.StopReason)
	return err
}
