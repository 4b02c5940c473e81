package serve

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/nwc-project/nwc/plugin/chat"
)

func writeJSONStatus(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; nothing to do about it
}

func writeError(w http.ResponseWriter, e *apiError) {
	writeJSONStatus(w, e.Status, map[string]*apiError{"error": e})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSONStatus(w, http.StatusOK, struct {
		Status string `json:"status"`
		Model  string `json:"model"`
		Stats
	}{"ok", s.opts.ModelID, s.Stats()})
}

func (s *Server) model() modelObject {
	return modelObject{ID: s.opts.ModelID, Object: "model", Created: s.created, OwnedBy: "nwc"}
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	writeJSONStatus(w, http.StatusOK, modelList{Object: "list", Data: []modelObject{s.model()}})
}

func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if id := r.PathValue("id"); id != s.opts.ModelID {
		writeError(w, &apiError{Status: http.StatusNotFound, Type: typeInvalid, Param: strp("model"), Code: strp(codeModel),
			Message: fmt.Sprintf("The model '%s' does not exist; this server serves '%s'.", id, s.opts.ModelID)})
		return
	}
	writeJSONStatus(w, http.StatusOK, s.model())
}

// prepare turns a validated request into prompt ids and generation
// parameters; errors are *apiError.
func (s *Server) prepare(req *request) ([]int32, Params, error) {
	if req.Model != s.opts.ModelID {
		return nil, Params{}, invalid("model", codeModel, "The model '%s' does not exist; this server serves '%s'.", req.Model, s.opts.ModelID)
	}
	ids := req.PromptID
	text := req.Prompt
	if req.Chat {
		var err error
		if text, err = s.eng.RenderChat(req.Messages); err != nil {
			if errors.Is(err, chat.ErrNoTemplate) {
				return nil, Params{}, invalid("messages", "", "The model '%s' has no chat template: use /v1/completions.", s.opts.ModelID)
			}
			return nil, Params{}, invalid("messages", codeInvalid, "The chat template failed on these messages: %v.", err)
		}
	}
	if ids == nil {
		var err error
		if ids, err = s.eng.Encode(text); err != nil {
			return nil, Params{}, invalid("prompt", codeInvalid, "The prompt could not be tokenized: %v.", err)
		}
		if len(ids) == 0 {
			return nil, Params{}, invalid("prompt", codeInvalid, "The prompt has no tokens.")
		}
	}
	for _, id := range ids {
		if int(id) >= s.eng.Vocab() {
			return nil, Params{}, invalid("prompt", codeInvalid, "Token id %d is outside the vocabulary (%d).", id, s.eng.Vocab())
		}
	}
	n, ctxLen := len(ids), s.opts.ContextLength
	maxTok := req.MaxTokens
	if maxTok == 0 {
		maxTok = s.opts.DefaultMaxTokens
		if ctxLen > 0 {
			maxTok = min(maxTok, ctxLen-n)
		}
	}
	if ctxLen > 0 && (n >= ctxLen || n+maxTok > ctxLen) {
		param := "prompt"
		if req.Chat {
			param = "messages"
		}
		return nil, Params{}, invalid(param, codeContext,
			"This model's maximum context length is %d tokens. However, you requested %d tokens (%d in the prompt, %d for the completion). Please reduce the length of the prompt or the completion.",
			ctxLen, n+max(maxTok, 1), n, max(maxTok, 1))
	}
	p := Params{MaxTokens: maxTok, Temperature: req.Temperature, TopP: req.TopP, Seed: req.Seed, Stop: req.Stop}
	if !req.SeedSet {
		p.Seed = rand.Uint64()
	}
	return ids, p, nil
}

func (s *Server) handleGenerate(w http.ResponseWriter, r *http.Request, isChat bool) {
	start := s.opts.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.invalidN.Add(1)
			writeError(w, &apiError{Status: http.StatusRequestEntityTooLarge, Type: typeInvalid, Code: strp(codeTooLarge),
				Message: fmt.Sprintf("The request body is larger than %d bytes.", mbe.Limit)})
		}
		return // the client went away
	}
	req, err := decodeRequest(body, isChat)
	var ids []int32
	var p Params
	if err == nil {
		ids, p, err = s.prepare(req)
	}
	if err != nil {
		s.invalidN.Add(1)
		var ae *apiError
		if !errors.As(err, &ae) {
			ae = &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()}
		}
		writeError(w, ae)
		return
	}
	ctx := r.Context()
	release, err := s.acquire(ctx)
	if err != nil {
		var ae *apiError
		if errors.As(err, &ae) {
			writeError(w, ae)
		}
		return
	}
	defer release()
	g := &generation{s: s, w: w, req: req, prompt: len(ids), created: s.opts.Now().Unix()}
	if isChat {
		g.id, g.object = "chatcmpl-"+crand.Text(), "chat.completion"
	} else {
		g.id, g.object = "cmpl-"+crand.Text(), "text_completion"
	}
	var out Output
	if req.Stream {
		out, err = g.stream(ctx, ids, p)
	} else {
		out, err = s.eng.Generate(ctx, ids, p, nil)
	}
	s.tokens.Add(int64(out.CompletionTokens))
	switch {
	case err != nil && (ctx.Err() != nil || g.gone):
		s.cancelled.Add(1)
		s.opts.Logf("serve: %s cancelled after %d tokens (%v): %v", g.id, out.CompletionTokens, time.Since(start).Round(time.Millisecond), err)
		// The client is gone, or the server is shutting down: then it hears why.
		e := &apiError{Status: http.StatusServiceUnavailable, Type: typeServer, Code: strp("cancelled"),
			Message: "The request was cancelled (the server is shutting down, or the client went away)."}
		if !req.Stream {
			writeError(w, e)
		} else if !g.gone {
			g.event(map[string]*apiError{"error": e})
		}
		return
	case err != nil:
		s.failed.Add(1)
		s.opts.Logf("serve: %s failed: %v", g.id, err)
		if !req.Stream {
			writeError(w, &apiError{Status: http.StatusInternalServerError, Type: typeServer, Message: err.Error()})
		} else if !g.gone {
			g.event(map[string]*apiError{"error": {Type: typeServer, Message: err.Error()}})
		}
		return
	}
	s.completed.Add(1)
	s.opts.Logf("serve: %s %d+%d tokens, %s, %v", g.id, len(ids), out.CompletionTokens, out.FinishReason, time.Since(start).Round(time.Millisecond))
	if !req.Stream {
		writeJSONStatus(w, http.StatusOK, g.response(out))
	}
}

// generation is one request being answered.
type generation struct {
	s       *Server
	w       http.ResponseWriter
	rc      *http.ResponseController
	req     *request
	id      string
	object  string
	created int64
	prompt  int
	gone    bool // a write failed: the client is gone
}

func (g *generation) usage(out Output) *usage {
	return &usage{PromptTokens: g.prompt, CompletionTokens: out.CompletionTokens, TotalTokens: g.prompt + out.CompletionTokens}
}

// response is the non-streaming body.
func (g *generation) response(out Output) response {
	fr := out.FinishReason
	c := choice{FinishReason: &fr}
	if g.req.Chat {
		c.Message = &chatMessage{Role: "assistant", Content: out.Text}
	} else {
		c.Text = &out.Text
	}
	return response{ID: g.id, Object: g.object, Created: g.created, Model: g.s.opts.ModelID, Choices: []choice{c}, Usage: g.usage(out)}
}

// chunk is a streamed chunk carrying text (and the finish reason, or nil).
func (g *generation) chunk(text string, role string, finish *string) response {
	c := choice{FinishReason: finish}
	obj := g.object
	if g.req.Chat {
		obj = "chat.completion.chunk"
		c.Delta = &delta{Role: role}
		if finish == nil {
			c.Delta.Content = &text
		}
	} else {
		c.Text = &text
	}
	return response{ID: g.id, Object: obj, Created: g.created, Model: g.s.opts.ModelID, Choices: []choice{c}}
}

// event writes one server-sent event "data: JSON" and flushes it.
func (g *generation) event(v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("serve: encode chunk: %w", err)
	}
	return g.raw(data)
}

func (g *generation) raw(data []byte) error {
	if g.gone {
		return errors.New("serve: client gone")
	}
	buf := make([]byte, 0, len(data)+8)
	buf = append(append(append(buf, "data: "...), data...), "\n\n"...)
	if _, err := g.w.Write(buf); err != nil {
		g.gone = true
		return fmt.Errorf("serve: write to the client: %w", err)
	}
	if err := g.rc.Flush(); err != nil {
		g.gone = true
		return fmt.Errorf("serve: flush to the client: %w", err)
	}
	return nil
}

// stream runs the generation as server-sent events: for chat, a first
// chunk with the role; a chunk per piece of text; a chunk with the finish
// reason; with include_usage a chunk with the usage and no choices; then
// "data: [DONE]".
func (g *generation) stream(ctx context.Context, ids []int32, p Params) (Output, error) {
	h := g.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	g.w.WriteHeader(http.StatusOK)
	g.rc = http.NewResponseController(g.w)
	if g.req.Chat {
		if err := g.event(g.chunk("", "assistant", nil)); err != nil {
			return Output{}, err
		}
	} else if err := g.rc.Flush(); err != nil { // headers now: the client's time to first byte
		g.gone = true
		return Output{}, fmt.Errorf("serve: flush to the client: %w", err)
	}
	out, err := g.s.eng.Generate(ctx, ids, p, func(text string) error {
		if text == "" {
			return nil
		}
		return g.event(g.chunk(text, "", nil))
	})
	if err != nil {
		return out, err
	}
	fr := out.FinishReason
	if err := g.event(g.chunk("", "", &fr)); err != nil {
		return out, err
	}
	if g.req.IncludeUsage {
		obj := g.object
		if g.req.Chat {
			obj = "chat.completion.chunk"
		}
		u := response{ID: g.id, Object: obj, Created: g.created, Model: g.s.opts.ModelID, Choices: []choice{}, Usage: g.usage(out)}
		if err := g.event(u); err != nil {
			return out, err
		}
	}
	return out, g.raw([]byte("[DONE]"))
}
