//go:build cgo

package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/nwc-project/nwc/internal/ortenv/orttest"
	"github.com/nwc-project/nwc/loader"
	"github.com/nwc-project/nwc/loader/codec"
	"github.com/nwc-project/nwc/loader/refmodel"
	"github.com/nwc-project/nwc/plugin/llama"
)

// TestSmolLM2Server: a real server on smollm2-135m answers chat and
// completions, streamed and not (the same greedy text both ways), serves
// two requests at once, and stops a generation whose client hangs up.
func TestSmolLM2Server(t *testing.T) {
	if _, err := refmodel.Lookup("smollm2-135m"); err != nil {
		if os.Getenv("NWC_REQUIRE_MODELS") == "1" {
			t.Fatalf("NWC_REQUIRE_MODELS=1: %v", err)
		}
		t.Skipf("reference model not installed: %v", err)
	}
	orttest.Require(t)
	src, _, err := loader.Open("smollm2-135m", codec.Env{})
	if err != nil {
		t.Fatal(err)
	}
	eng, err := OpenLlamaEngine(src, llama.Options{Threads: 1})
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	s := New(eng, Options{ModelID: "smollm2-135m", Parallel: 2, MaxQueue: 2, Logf: t.Logf})
	ts := httptest.NewServer(s)
	defer ts.Close()

	chatBody := `{"model":"smollm2-135m","messages":[{"role":"user","content":"What is the capital of France?"}],"temperature":0,"max_tokens":16`
	code, body := post(t, ts.URL+"/v1/chat/completions", chatBody+"}")
	var r response
	if err := json.Unmarshal(body, &r); err != nil || code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	if r.Choices[0].Message.Content != "The capital of France is Paris." || *r.Choices[0].FinishReason != "stop" || *r.Usage != (usage{37, 7, 44}) {
		t.Fatalf("%s", body)
	}
	ev := streamPost(t, ts.URL+"/v1/chat/completions", chatBody+`,"stream":true,"stream_options":{"include_usage":true}}`)
	var text strings.Builder
	for _, e := range ev[:len(ev)-2] {
		var c response
		if err := json.Unmarshal([]byte(e), &c); err != nil {
			t.Fatal(err)
		}
		if d := c.Choices[0].Delta; d.Content != nil {
			text.WriteString(*d.Content)
		}
	}
	if text.String() != "The capital of France is Paris." || ev[len(ev)-1] != "[DONE]" || !strings.Contains(ev[len(ev)-2], `"usage":{"prompt_tokens":37,"completion_tokens":7,"total_tokens":44}`) {
		t.Fatalf("%q", ev)
	}

	// Two completions at once, each with its own cache: the same greedy text
	// as one alone.
	compBody := `{"model":"smollm2-135m","prompt":"One, two, three, four, five,","temperature":0,"max_tokens":6}`
	_, alone := post(t, ts.URL+"/v1/completions", compBody)
	var a response
	json.Unmarshal(alone, &a)
	if !strings.HasPrefix(*a.Choices[0].Text, " six, seven") {
		t.Fatalf("%s", alone)
	}
	got := make(chan string, 2)
	for range 2 {
		go func() {
			_, b := post(t, ts.URL+"/v1/completions", compBody)
			var r response
			json.Unmarshal(b, &r)
			if len(r.Choices) == 1 {
				got <- *r.Choices[0].Text
			} else {
				got <- string(b)
			}
		}()
	}
	for range 2 {
		if g := <-got; g != *a.Choices[0].Text {
			t.Errorf("concurrent: %q, alone %q", g, *a.Choices[0].Text)
		}
	}

	// Hang up after the first chunk: the generation stops.
	before := s.Stats()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions",
		strings.NewReader(`{"model":"smollm2-135m","prompt":"Once upon a time","max_tokens":2000,"stream":true}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("%q %v", line, err)
	}
	cancel()
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	waitFor(t, "the generation to stop", func() bool { return s.Stats().Cancelled == before.Cancelled+1 })
	st := s.Stats()
	if st.Active != 0 || st.Tokens-before.Tokens >= 2000 || st.Failed != 0 {
		t.Fatalf("%+v", st)
	}
}
