package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nwc-project/nwc/plugin/chat"
)

// fakeEngine: one token per byte; generation emits "w0 w1 w2 ..." (one
// word a token), every Delay, waiting at Gate (when set) before the first.
type fakeEngine struct {
	Delay      time.Duration
	Gate       chan struct{}
	NoTemplate bool
	ctxLen     int

	started, steps, cancelled atomic.Int64
}

func (f *fakeEngine) Encode(text string) ([]int32, error) {
	ids := make([]int32, len(text))
	for i := range len(text) {
		ids[i] = int32(text[i])
	}
	return ids, nil
}

func (f *fakeEngine) RenderChat(msgs []chat.Message) (string, error) {
	if f.NoTemplate {
		return "", chat.ErrNoTemplate
	}
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "%s: %s\n", m.Role, m.Content)
	}
	b.WriteString("assistant:")
	return b.String(), nil
}

func (f *fakeEngine) ContextLength() int { return f.ctxLen }
func (f *fakeEngine) Vocab() int         { return 256 }

func (f *fakeEngine) Generate(ctx context.Context, prompt []int32, p Params, onText func(string) error) (Output, error) {
	f.started.Add(1)
	out := Output{FinishReason: "length"}
	if f.Gate != nil {
		select {
		case <-f.Gate:
		case <-ctx.Done():
			f.cancelled.Add(1)
			return out, fmt.Errorf("fake: %w", ctx.Err())
		}
	}
	for i := 0; i < p.MaxTokens; i++ {
		if f.Delay > 0 {
			select {
			case <-time.After(f.Delay):
			case <-ctx.Done():
				f.cancelled.Add(1)
				return out, fmt.Errorf("fake: %w", ctx.Err())
			}
		}
		f.steps.Add(1)
		word := fmt.Sprintf("w%d ", i)
		out.CompletionTokens++
		next := out.Text + word
		for _, s := range p.Stop {
			if j := strings.Index(next, s); j >= 0 {
				out.Text, out.FinishReason = next[:j], "stop"
				if onText != nil {
					if err := onText(next[len(next)-len(word) : j]); err != nil {
						return out, err
					}
				}
				return out, nil
			}
		}
		out.Text = next
		if onText != nil {
			if err := onText(word); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

func newTestServer(t *testing.T, eng *fakeEngine, opts Options) (*Server, *httptest.Server) {
	t.Helper()
	if eng.ctxLen == 0 {
		eng.ctxLen = 128
	}
	if opts.ModelID == "" {
		opts.ModelID = "fake"
	}
	opts.Logf = t.Logf
	s := New(eng, opts)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts
}

func post(t *testing.T, url, body string) (int, []byte) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, data
}

func TestModelsAndHealth(t *testing.T) {
	_, ts := newTestServer(t, &fakeEngine{}, Options{ModelID: "m1"})
	for _, c := range []struct{ path, want string }{
		{"/v1/models", `{"object":"list","data":[{"id":"m1","object":"model","created":`},
		{"/v1/models/m1", `{"id":"m1","object":"model"`},
		{"/health", `{"status":"ok","model":"m1","active":0,`},
	} {
		resp, err := http.Get(ts.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), c.want) || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s", c.path, resp.StatusCode, body)
		}
	}
	for _, path := range []string{"/v1/models/other", "/v1/embeddings"} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error apiError }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != 404 || e.Error.Message == "" {
			t.Errorf("%s: %d %+v", path, resp.StatusCode, e)
		}
	}
}

func TestChatAndCompletions(t *testing.T) {
	_, ts := newTestServer(t, &fakeEngine{}, Options{DefaultMaxTokens: 5})
	code, body := post(t, ts.URL+"/v1/chat/completions", `{"model":"fake","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":3,"unknown_field":1}`)
	var r response
	if err := json.Unmarshal(body, &r); err != nil || code != 200 {
		t.Fatalf("%d %s %v", code, body, err)
	}
	if !strings.HasPrefix(r.ID, "chatcmpl-") || r.Object != "chat.completion" || r.Model != "fake" || r.Created == 0 || len(r.Choices) != 1 {
		t.Fatalf("%s", body)
	}
	c := r.Choices[0]
	prompt := len("system: be brief\nuser: hi\nassistant:")
	if c.Message == nil || c.Message.Role != "assistant" || c.Message.Content != "w0 w1 w2 " || *c.FinishReason != "length" ||
		*r.Usage != (usage{prompt, 3, prompt + 3}) || c.Delta != nil || c.Text != nil {
		t.Fatalf("%s", body)
	}
	// max_completion_tokens, and the server's default max tokens.
	for _, c := range []struct {
		body string
		want string
	}{
		{`{"model":"fake","messages":[{"role":"user","content":"x"}],"max_completion_tokens":2}`, "w0 w1 "},
		{`{"model":"fake","messages":[{"role":"developer","content":"x"}]}`, "w0 w1 w2 w3 w4 "},
	} {
		code, body := post(t, ts.URL+"/v1/chat/completions", c.body)
		var r response
		if err := json.Unmarshal(body, &r); err != nil || code != 200 || r.Choices[0].Message.Content != c.want {
			t.Errorf("%s: %d %s", c.body, code, body)
		}
	}

	code, body = post(t, ts.URL+"/v1/completions", `{"model":"fake","prompt":"abc","max_tokens":10,"stop":["w3"],"temperature":0,"top_p":0.5,"seed":7}`)
	r = response{}
	if err := json.Unmarshal(body, &r); err != nil || code != 200 {
		t.Fatalf("%d %s %v", code, body, err)
	}
	c = r.Choices[0]
	if !strings.HasPrefix(r.ID, "cmpl-") || r.Object != "text_completion" || c.Text == nil || *c.Text != "w0 w1 w2 " ||
		*c.FinishReason != "stop" || *r.Usage != (usage{3, 4, 7}) || c.Message != nil {
		t.Fatalf("%s", body)
	}
	// The raw JSON carries logprobs: null and finish_reason.
	if !bytes.Contains(body, []byte(`"logprobs":null,"finish_reason":"stop"`)) {
		t.Errorf("%s", body)
	}
	// A prompt of token ids, and a list of one string.
	for _, p := range []string{`[97,98,99]`, `["abc"]`} {
		code, body := post(t, ts.URL+"/v1/completions", `{"model":"fake","prompt":`+p+`,"max_tokens":1}`)
		if code != 200 || !bytes.Contains(body, []byte(`"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}`)) {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
}

// sse reads a stream's events ("data: X" payloads) and checks the framing.
func sse(t *testing.T, r io.Reader) []string {
	t.Helper()
	var events []string
	sc := bufio.NewScanner(r)
	blank := true
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			blank = true
			continue
		}
		if !blank || !strings.HasPrefix(line, "data: ") {
			t.Fatalf("bad SSE framing at %q (after %d events)", line, len(events))
		}
		events = append(events, strings.TrimPrefix(line, "data: "))
		blank = false
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return events
}

func streamPost(t *testing.T, url, body string) []string {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		data, _ := io.ReadAll(resp.Body)
		t.Fatalf("%d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), data)
	}
	return sse(t, resp.Body)
}

func TestStreaming(t *testing.T) {
	_, ts := newTestServer(t, &fakeEngine{}, Options{})
	for _, c := range []struct {
		name, path, body string
		usage            bool
	}{
		{"chat", "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true}`, false},
		{"chat+usage", "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"hi"}],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}`, true},
		{"completions", "/v1/completions", `{"model":"fake","prompt":"hi","max_tokens":4,"stream":true}`, false},
		{"completions+usage", "/v1/completions", `{"model":"fake","prompt":"hi","max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			isChat := strings.Contains(c.path, "chat")
			ev := streamPost(t, ts.URL+c.path, c.body)
			if len(ev) < 3 || ev[len(ev)-1] != "[DONE]" {
				t.Fatalf("%q", ev)
			}
			ev = ev[:len(ev)-1]
			var chunks []response
			for _, e := range ev {
				var r response
				if err := json.Unmarshal([]byte(e), &r); err != nil {
					t.Fatalf("%v: %s", err, e)
				}
				chunks = append(chunks, r)
			}
			wantObj := "text_completion"
			if isChat {
				wantObj = "chat.completion.chunk"
			}
			if c.usage {
				u := chunks[len(chunks)-1]
				if len(u.Choices) != 0 || u.Usage == nil || u.Usage.CompletionTokens != 4 || u.Usage.TotalTokens != u.Usage.PromptTokens+4 {
					t.Fatalf("usage chunk %s", ev[len(ev)-1])
				}
				if !strings.Contains(ev[len(ev)-1], `"choices":[]`) {
					t.Errorf("usage chunk without choices: []: %s", ev[len(ev)-1])
				}
				chunks = chunks[:len(chunks)-1]
			}
			var text strings.Builder
			for i, ch := range chunks {
				if ch.ID != chunks[0].ID || ch.Object != wantObj || ch.Model != "fake" || len(ch.Choices) != 1 || (ch.Usage != nil) {
					t.Fatalf("chunk %d: %s", i, ev[i])
				}
				chc := ch.Choices[0]
				last := i == len(chunks)-1
				if (chc.FinishReason != nil) != last {
					t.Fatalf("chunk %d finish_reason: %s", i, ev[i])
				}
				if isChat {
					if chc.Delta == nil || (i == 0) != (chc.Delta.Role == "assistant") {
						t.Fatalf("chunk %d delta: %s", i, ev[i])
					}
					if chc.Delta.Content != nil {
						text.WriteString(*chc.Delta.Content)
					}
				} else {
					text.WriteString(*chc.Text)
				}
			}
			if text.String() != "w0 w1 w2 w3 " || *chunks[len(chunks)-1].Choices[0].FinishReason != "length" {
				t.Fatalf("text %q", text.String())
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	eng := &fakeEngine{ctxLen: 40}
	s, ts := newTestServer(t, eng, Options{})
	noTmpl, ts2 := newTestServer(t, &fakeEngine{NoTemplate: true}, Options{})
	_ = noTmpl
	long := strings.Repeat("x", 50)
	for _, c := range []struct {
		url, path, body, param, code string
	}{
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[`, "", ""},
		{ts.URL, "/v1/chat/completions", `{"model":"fake"} {}`, "", ""},
		{ts.URL, "/v1/chat/completions", `[1,2]`, "", ""},
		{ts.URL, "/v1/chat/completions", ``, "", ""},
		{ts.URL, "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}]}`, "model", ""},
		{ts.URL, "/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"x"}]}`, "model", codeModel},
		{ts.URL, "/v1/chat/completions", `{"model":"fake"}`, "messages", ""},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[]}`, "messages", ""},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"content":"x"}]}`, "messages[0].role", ""},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"tool","content":"x"}]}`, "messages[0].role", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user"}]}`, "messages[0].content", ""},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":5}]}`, "messages[0].content", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "messages[0].content[0]", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":"hi"}`, "messages", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"max_tokens":-1}`, "max_tokens", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"max_tokens":0}`, "max_tokens", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"max_completion_tokens":-5}`, "max_completion_tokens", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"max_tokens":"ten"}`, "max_tokens", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}`, "max_tokens", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"n":2}`, "n", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"temperature":2.5}`, "temperature", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"top_p":0}`, "top_p", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}`, "stop", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"stop":[""]}`, "stop", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"stop":3}`, "stop", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}],"stream_options":{"include_usage":true}}`, "stream_options", codeInvalid},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"` + long + `"}]}`, "messages", codeContext},
		{ts.URL, "/v1/chat/completions", `{"model":"fake","prompt":"x","messages":[{"role":"user","content":"x"}]}`, "prompt", ""},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":"` + long + `"}`, "prompt", codeContext},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":"abc","max_tokens":38}`, "prompt", codeContext},
		{ts.URL, "/v1/completions", `{"model":"fake"}`, "prompt", ""},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":""}`, "prompt", codeInvalid},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":["a","b"]}`, "prompt", codeInvalid},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":[1,-2]}`, "prompt", codeInvalid},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":[1,300]}`, "prompt", codeInvalid},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":{"a":1}}`, "prompt", codeInvalid},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":"x","echo":true}`, "echo", codeInvalid},
		{ts.URL, "/v1/completions", `{"model":"fake","prompt":"x","messages":[]}`, "messages", ""},
		{ts2.URL, "/v1/chat/completions", `{"model":"fake","messages":[{"role":"user","content":"x"}]}`, "messages", ""},
	} {
		code, body := post(t, c.url+c.path, c.body)
		var e struct {
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || code != 400 {
			t.Errorf("%s %s: %d %s", c.path, c.body, code, body)
			continue
		}
		param, _ := e.Error["param"].(string)
		ecode, _ := e.Error["code"].(string)
		msg, _ := e.Error["message"].(string)
		_, hasParam := e.Error["param"]
		_, hasCode := e.Error["code"]
		if e.Error["type"] != typeInvalid || msg == "" || param != c.param || ecode != c.code || !hasParam || !hasCode {
			t.Errorf("%s %s: %s (want param %q code %q)", c.path, c.body, body, c.param, c.code)
		}
	}
	if eng.started.Load() != 0 {
		t.Errorf("%d generations started by bad requests", eng.started.Load())
	}
	if st := s.Stats(); st.Invalid == 0 || st.Active != 0 || st.Completed != 0 {
		t.Errorf("%+v", st)
	}
	// A body over the limit.
	code, body := post(t, ts.URL+"/v1/completions", `{"model":"fake","prompt":"`+strings.Repeat("x", maxBodyBytes)+`"}`)
	if code != http.StatusRequestEntityTooLarge || !bytes.Contains(body, []byte(`"type":"invalid_request_error"`)) {
		t.Errorf("big body: %d %.200s", code, body)
	}
	// The wrong method.
	resp, err := http.Get(ts.URL + "/v1/chat/completions")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET chat: %d", resp.StatusCode)
	}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestQueueFull429(t *testing.T) {
	eng := &fakeEngine{Gate: make(chan struct{})}
	s, ts := newTestServer(t, eng, Options{Parallel: 2, MaxQueue: 1})
	body := `{"model":"fake","messages":[{"role":"user","content":"x"}],"max_tokens":2}`
	codes := make(chan int, 3)
	for range 3 { // two run, one waits
		go func() {
			resp, err := http.Post(ts.URL+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				codes <- 0
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	waitFor(t, "2 active and 1 queued", func() bool { st := s.Stats(); return st.Active == 2 && st.Queued == 1 })
	code, data := post(t, ts.URL+"/v1/chat/completions", body)
	var e struct{ Error apiError }
	if err := json.Unmarshal(data, &e); err != nil || code != http.StatusTooManyRequests || e.Error.Type != typeRate || *e.Error.Code != codeRate {
		t.Fatalf("%d %s", code, data)
	}
	close(eng.Gate)
	for range 3 {
		if c := <-codes; c != 200 {
			t.Errorf("queued request: %d", c)
		}
	}
	if st := s.Stats(); st.Rejected != 1 || st.Completed != 3 || st.Active != 0 || st.Queued != 0 || st.Tokens != 6 {
		t.Errorf("%+v", st)
	}
	// The slots are free again.
	if code, data := post(t, ts.URL+"/v1/chat/completions", body); code != 200 {
		t.Errorf("%d %s", code, data)
	}
}

func TestCancelOnDisconnect(t *testing.T) {
	eng := &fakeEngine{Delay: 5 * time.Millisecond, ctxLen: 1 << 20}
	s, ts := newTestServer(t, eng, Options{Parallel: 1, MaxQueue: 1})
	for i, stream := range []bool{true, false} {
		ctx, cancel := context.WithCancel(context.Background())
		body := fmt.Sprintf(`{"model":"fake","prompt":"x","max_tokens":100000,"stream":%v}`, stream)
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", strings.NewReader(body))
		done := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				if stream {
					// Read the first chunk, then hang up.
					br := bufio.NewReader(resp.Body)
					_, err = br.ReadString('\n')
					_, err = br.ReadString('\n')
					cancel()
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			done <- err
		}()
		if !stream {
			waitFor(t, "some steps", func() bool { return eng.steps.Load() > 3 })
			cancel()
		}
		<-done
		waitFor(t, "the generation to stop", func() bool { return s.Stats().Cancelled == int64(i+1) })
		if eng.cancelled.Load() != int64(i+1) {
			t.Fatalf("engine saw %d cancellations", eng.cancelled.Load())
		}
		steps := eng.steps.Load()
		time.Sleep(30 * time.Millisecond)
		if eng.steps.Load() != steps || s.Stats().Active != 0 {
			t.Fatalf("generation still running: %+v", s.Stats())
		}
	}
	// A client that leaves while queued frees its place.
	eng.Gate = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", strings.NewReader(`{"model":"fake","prompt":"x","max_tokens":1}`))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, "one active", func() bool { return s.Stats().Active == 1 })
	req2, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/completions", strings.NewReader(`{"model":"fake","prompt":"x","max_tokens":1}`))
	go func() {
		if resp, err := http.DefaultClient.Do(req2); err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, "one queued", func() bool { return s.Stats().Queued == 1 })
	cancel()
	waitFor(t, "queue and slot empty", func() bool { st := s.Stats(); return st.Queued == 0 && st.Active == 0 })
	close(eng.Gate)
}

func TestShutdown(t *testing.T) {
	eng := &fakeEngine{Delay: 2 * time.Millisecond}
	s := New(eng, Options{ModelID: "fake", Parallel: 2, Logf: t.Logf})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, ln, 300*time.Millisecond) }()
	url := "http://" + ln.Addr().String() + "/v1/completions"
	type result struct {
		code int
		body string
		err  error
	}
	run := func(maxTokens int) chan result {
		ch := make(chan result, 1)
		go func() {
			resp, err := http.Post(url, "application/json", strings.NewReader(fmt.Sprintf(`{"model":"fake","prompt":"x","max_tokens":%d}`, maxTokens)))
			if err != nil {
				ch <- result{err: err}
				return
			}
			data, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			ch <- result{resp.StatusCode, string(data), err}
		}()
		return ch
	}
	short := run(40)     // ~80 ms: finishes within the grace period
	long := run(1000000) // cancelled when the grace period is over
	waitFor(t, "two active", func() bool { return s.Stats().Active == 2 })
	stop()
	start := time.Now()
	select {
	case err := <-served:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if r := <-short; r.err != nil || r.code != 200 || !strings.Contains(r.body, `"completion_tokens":40`) {
		t.Errorf("short request: %+v", r)
	}
	if r := <-long; r.err != nil || r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, `"type":"server_error"`) {
		t.Errorf("long request: %+v", r)
	}
	if st := s.Stats(); st.Completed != 1 || st.Cancelled != 1 || st.Active != 0 {
		t.Errorf("%+v", st)
	}
	if _, err := http.Post(url, "application/json", strings.NewReader(`{}`)); err == nil {
		t.Error("server still accepts requests")
	}
}

func TestServeListenerError(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	s := New(&fakeEngine{}, Options{Logf: t.Logf})
	if err := s.Serve(context.Background(), ln, time.Second); err == nil || errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("%v", err)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stop":["a"],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"m","prompt":[1,2,3],"temperature":0.5,"top_p":0.9,"seed":-1,"n":1}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"x"}]}],"max_completion_tokens":1}`,
		`{"model":"m","prompt":["x"],"stop":"s"}`,
		`{"model":1}`, `null`, `[]`, `{"messages":null}`,
	} {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	f.Fuzz(func(t *testing.T, body []byte, isChat bool) {
		r, err := decodeRequest(body, isChat)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status != 400 || ae.Type != typeInvalid || ae.Message == "" {
				t.Fatalf("%q: %v", body, err)
			}
			return
		}
		if r.Model == "" || r.MaxTokens < 0 || r.Temperature < 0 || r.Temperature > 2 || r.TopP <= 0 || r.TopP > 1 || len(r.Stop) > maxStops {
			t.Fatalf("%q: accepted %+v", body, r)
		}
		if isChat && len(r.Messages) == 0 || !isChat && r.Prompt == "" && len(r.PromptID) == 0 {
			t.Fatalf("%q: accepted %+v", body, r)
		}
	})
}
