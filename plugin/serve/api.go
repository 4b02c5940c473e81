package serve

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/nwc-project/nwc/plugin/chat"
)

// The wire types of the OpenAI API (the subset nwc serves).

// apiError is the body of an error response: {"error": {...}}.
type apiError struct {
	Status  int     `json:"-"`
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

func (e *apiError) Error() string { return e.Message }

// Error types and codes.
const (
	typeInvalid  = "invalid_request_error"
	typeRate     = "rate_limit_error"
	typeServer   = "server_error"
	codeContext  = "context_length_exceeded"
	codeModel    = "model_not_found"
	codeRate     = "rate_limit_exceeded"
	codeInvalid  = "invalid_value"
	codeTooLarge = "request_too_large"
)

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// invalid is a 400 invalid_request_error about param.
func invalid(param, code, format string, args ...any) *apiError {
	return &apiError{Status: 400, Message: fmt.Sprintf(format, args...), Type: typeInvalid, Param: strp(param), Code: strp(code)}
}

// streamOptions is stream_options.
type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// wireMessage is one message of a chat request; content is a string or a
// list of content parts ({"type": "text", "text": ...}).
type wireMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// wireRequest is the body of /v1/chat/completions and /v1/completions
// (Messages for the one, Prompt for the other). Fields the server does not
// use (frequency_penalty, user, ...) are accepted and ignored.
type wireRequest struct {
	Model               string          `json:"model"`
	Messages            []wireMessage   `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	Temperature         *float64        `json:"temperature"`
	TopP                *float64        `json:"top_p"`
	Seed                *int64          `json:"seed"`
	Stop                json.RawMessage `json:"stop"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	N                   *int64          `json:"n"`
	Echo                bool            `json:"echo"`
}

// request is a validated request.
type request struct {
	Chat     bool
	Model    string
	Messages []chat.Message // chat
	Prompt   string         // completions: text
	PromptID []int32        // completions: token ids instead of text
	// MaxTokens is 0 when the client set none.
	MaxTokens    int
	Temperature  float64
	TopP         float64
	Seed         uint64
	SeedSet      bool
	Stop         []string
	Stream       bool
	IncludeUsage bool
}

// Limits on a request's fields.
const (
	maxStops      = 4
	maxStopLen    = 256
	maxMessages   = 1024
	maxPromptIDs  = 1 << 20
	maxBodyBytes  = 8 << 20
	maxTokenLimit = 1 << 24
)

// decodeRequest parses and validates the JSON body of a chat (isChat) or
// completions request. Errors are *apiError (400).
func decodeRequest(body []byte, isChat bool) (*request, error) {
	var w wireRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, invalid(te.Field, codeInvalid, "Invalid type for '%s': expected %s, got a JSON %s.", te.Field, te.Type, te.Value)
		}
		return nil, invalid("", "", "We could not parse the JSON body of your request: %v.", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("", "", "We could not parse the JSON body of your request: data after the JSON object.")
	}
	r := &request{Chat: isChat, Model: w.Model, Stream: w.Stream, Temperature: 1, TopP: 1}
	if w.Model == "" {
		return nil, invalid("model", "", "You must provide a model parameter.")
	}
	if w.N != nil && *w.N != 1 {
		return nil, invalid("n", codeInvalid, "Only n=1 is supported, got n=%d.", *w.N)
	}
	if w.StreamOptions != nil {
		if !w.Stream {
			return nil, invalid("stream_options", codeInvalid, "The 'stream_options' parameter is only allowed when 'stream' is enabled.")
		}
		r.IncludeUsage = w.StreamOptions.IncludeUsage
	}
	mt := w.MaxTokens
	param := "max_tokens"
	if w.MaxCompletionTokens != nil {
		mt, param = w.MaxCompletionTokens, "max_completion_tokens"
	}
	if mt != nil {
		if *mt < 1 || *mt > maxTokenLimit {
			return nil, invalid(param, codeInvalid, "Invalid '%s': integer %d is out of range [1, %d].", param, *mt, maxTokenLimit)
		}
		r.MaxTokens = int(*mt)
	}
	if t := w.Temperature; t != nil {
		if math.IsNaN(*t) || *t < 0 || *t > 2 {
			return nil, invalid("temperature", codeInvalid, "Invalid 'temperature': %g is out of range [0, 2].", *t)
		}
		r.Temperature = *t
	}
	if p := w.TopP; p != nil {
		if math.IsNaN(*p) || *p <= 0 || *p > 1 {
			return nil, invalid("top_p", codeInvalid, "Invalid 'top_p': %g is out of range (0, 1].", *p)
		}
		r.TopP = *p
	}
	if w.Seed != nil {
		r.Seed, r.SeedSet = uint64(*w.Seed), true
	}
	stops, err := decodeStop(w.Stop)
	if err != nil {
		return nil, err
	}
	r.Stop = stops
	if isChat {
		if w.Prompt != nil {
			return nil, invalid("prompt", "", "Unrecognized request argument supplied: prompt (use /v1/completions).")
		}
		if r.Messages, err = decodeMessages(w.Messages); err != nil {
			return nil, err
		}
		return r, nil
	}
	if w.Messages != nil {
		return nil, invalid("messages", "", "Unrecognized request argument supplied: messages (use /v1/chat/completions).")
	}
	if w.Echo {
		return nil, invalid("echo", codeInvalid, "echo is not supported.")
	}
	if r.Prompt, r.PromptID, err = decodePrompt(w.Prompt); err != nil {
		return nil, err
	}
	return r, nil
}

// decodeStop reads stop: null, a string, or a list of up to 4 strings.
func decodeStop(raw json.RawMessage) ([]string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var list []string
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		list = []string{one}
	} else if err := json.Unmarshal(raw, &list); err != nil {
		return nil, invalid("stop", codeInvalid, "Invalid 'stop': expected a string or a list of strings.")
	}
	if len(list) > maxStops {
		return nil, invalid("stop", codeInvalid, "Invalid 'stop': at most %d stop sequences, got %d.", maxStops, len(list))
	}
	for _, s := range list {
		if s == "" || len(s) > maxStopLen {
			return nil, invalid("stop", codeInvalid, "Invalid 'stop': each stop sequence must be 1 to %d bytes.", maxStopLen)
		}
	}
	return list, nil
}

// decodeMessages validates a chat request's messages.
func decodeMessages(ws []wireMessage) ([]chat.Message, error) {
	if len(ws) == 0 {
		return nil, invalid("messages", "", "Missing required parameter: 'messages' (a non-empty list).")
	}
	if len(ws) > maxMessages {
		return nil, invalid("messages", codeInvalid, "Too many messages: %d (at most %d).", len(ws), maxMessages)
	}
	msgs := make([]chat.Message, len(ws))
	for i, m := range ws {
		param := fmt.Sprintf("messages[%d]", i)
		switch m.Role {
		case "system", "user", "assistant":
		case "developer": // OpenAI's newer name for system
			m.Role = "system"
		case "":
			return nil, invalid(param+".role", "", "Missing required parameter: '%s.role'.", param)
		default:
			return nil, invalid(param+".role", codeInvalid, "Invalid value for '%s.role': %q (system, developer, user or assistant).", param, m.Role)
		}
		text, err := messageText(m.Content, param)
		if err != nil {
			return nil, err
		}
		msgs[i] = chat.Message{Role: m.Role, Content: text}
	}
	return msgs, nil
}

// messageText reads a message's content: a string, or a list of text parts
// (joined).
func messageText(raw json.RawMessage, param string) (string, error) {
	if isNull(raw) {
		return "", invalid(param+".content", "", "Missing required parameter: '%s.content'.", param)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string  `json:"type"`
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", invalid(param+".content", codeInvalid, "Invalid '%s.content': expected a string or a list of text parts.", param)
	}
	var b strings.Builder
	for j, p := range parts {
		if p.Type != "text" || p.Text == nil {
			return "", invalid(fmt.Sprintf("%s.content[%d]", param, j), codeInvalid, "Only text content parts are supported (type %q).", p.Type)
		}
		b.WriteString(*p.Text)
	}
	return b.String(), nil
}

// decodePrompt reads a completions prompt: a string, a list of one string,
// or a list of token ids.
func decodePrompt(raw json.RawMessage) (string, []int32, error) {
	if isNull(raw) {
		return "", nil, invalid("prompt", "", "Missing required parameter: 'prompt'.")
	}
	var s string
	if err := json.Unmarshal(raw, &s); err == nil {
		if s == "" {
			return "", nil, invalid("prompt", codeInvalid, "Invalid 'prompt': empty.")
		}
		return s, nil, nil
	}
	var list []string
	if err := json.Unmarshal(raw, &list); err == nil {
		if len(list) != 1 || list[0] == "" {
			return "", nil, invalid("prompt", codeInvalid, "Invalid 'prompt': one non-empty prompt per request (got a list of %d).", len(list))
		}
		return list[0], nil, nil
	}
	var ids []int64
	if err := json.Unmarshal(raw, &ids); err == nil {
		if len(ids) == 0 || len(ids) > maxPromptIDs {
			return "", nil, invalid("prompt", codeInvalid, "Invalid 'prompt': 1 to %d token ids.", maxPromptIDs)
		}
		out := make([]int32, len(ids))
		for i, id := range ids {
			if id < 0 || id > math.MaxInt32 {
				return "", nil, invalid("prompt", codeInvalid, "Invalid 'prompt': token id %d out of range.", id)
			}
			out[i] = int32(id)
		}
		return "", out, nil
	}
	return "", nil, invalid("prompt", codeInvalid, "Invalid 'prompt': expected a string, a list of one string, or a list of token ids.")
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// Response bodies.

type usage struct {
	PromptTokens     int `json:"prompt_tokens"`
	CompletionTokens int `json:"completion_tokens"`
	TotalTokens      int `json:"total_tokens"`
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type delta struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
}

// choice is one choice of any response or chunk: Message (chat), Delta
// (chat chunk) or Text (completions).
type choice struct {
	Index        int          `json:"index"`
	Message      *chatMessage `json:"message,omitempty"`
	Delta        *delta       `json:"delta,omitempty"`
	Text         *string      `json:"text,omitempty"`
	Logprobs     any          `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

// response is a completion, a chat completion or a chunk of either.
type response struct {
	ID      string   `json:"id"`
	Object  string   `json:"object"`
	Created int64    `json:"created"`
	Model   string   `json:"model"`
	Choices []choice `json:"choices"`
	Usage   *usage   `json:"usage,omitempty"`
}

type modelObject struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type modelList struct {
	Object string        `json:"object"`
	Data   []modelObject `json:"data"`
}
