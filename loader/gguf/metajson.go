package gguf

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// The metadata JSON is an array with one object per key, in file order:
//
//	[{"key":"llama.block_count","type":"uint32","value":30},
//	 {"key":"general.languages","type":"array","elem":"string","value":["en"]},
//	 {"key":"x","type":"array","elem":"array","value":[{"type":"array","elem":"int32","value":[1,2]}]}]
//
// It preserves every type and value exactly:
//   - integers are JSON numbers of full precision (uint64/int64 included);
//   - floats use the shortest decimal that parses back to the same float32 or
//     float64; NaN and infinities are the strings "NaN", "+Inf", "-Inf";
//   - strings that are not valid UTF-8 (JSON could not carry them) are
//     base64-encoded, and the object says "encoding":"base64" (for an array
//     of strings, all its elements are then base64);
//   - arrays of uint8 are arrays of numbers (not base64);
//   - a key that is not valid UTF-8 is written as "key_base64" instead.

type jsonKV struct {
	Key      string          `json:"key,omitempty"`
	KeyB64   string          `json:"key_base64,omitempty"`
	Type     string          `json:"type"`
	Elem     string          `json:"elem,omitempty"`
	Encoding string          `json:"encoding,omitempty"`
	Value    json.RawMessage `json:"value"`
}

// MarshalMetadataJSON encodes kvs as the metadata JSON described above.
func MarshalMetadataJSON(kvs []KV) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("[")
	for i, kv := range kvs {
		if err := kv.Value.check(0); err != nil {
			return nil, fmt.Errorf("gguf: metadata %q: %w", kv.Key, err)
		}
		if i > 0 {
			b.WriteString(",\n")
		}
		if utf8.ValidString(kv.Key) {
			b.WriteString(`{"key":`)
			writeJSONString(&b, kv.Key)
		} else {
			b.WriteString(`{"key_base64":"` + base64.StdEncoding.EncodeToString([]byte(kv.Key)) + `"`)
		}
		b.WriteString(",")
		writeJSONValue(&b, kv.Value)
		b.WriteString("}")
	}
	b.WriteString("]\n")
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // valid UTF-8 strings never fail
	b.Write(enc)
}

// writeJSONValue writes the "type", "elem", "encoding" and "value" members.
func writeJSONValue(b *bytes.Buffer, v Value) {
	fmt.Fprintf(b, `"type":%q,`, v.Type.String())
	if v.Type != ValueArray {
		if s, ok := v.V.(string); ok && !utf8.ValidString(s) {
			b.WriteString(`"encoding":"base64","value":"`)
			b.WriteString(base64.StdEncoding.EncodeToString([]byte(s)))
			b.WriteString(`"`)
			return
		}
		b.WriteString(`"value":`)
		writeJSONScalar(b, v.V)
		return
	}
	fmt.Fprintf(b, `"elem":%q,`, v.Elem.String())
	if ss, ok := v.V.([]string); ok {
		b64 := false
		for _, s := range ss {
			if !utf8.ValidString(s) {
				b64 = true
				break
			}
		}
		if b64 {
			b.WriteString(`"encoding":"base64",`)
		}
		b.WriteString(`"value":[`)
		for i, s := range ss {
			if i > 0 {
				b.WriteString(",")
			}
			if b64 {
				b.WriteString(`"` + base64.StdEncoding.EncodeToString([]byte(s)) + `"`)
			} else {
				writeJSONString(b, s)
			}
		}
		b.WriteString("]")
		return
	}
	b.WriteString(`"value":[`)
	switch a := v.V.(type) {
	case []Value:
		for i, e := range a {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString("{")
			writeJSONValue(b, e)
			b.WriteString("}")
		}
	default:
		writeJSONElems(b, a)
	}
	b.WriteString("]")
}

func writeJSONElems(b *bytes.Buffer, a any) {
	each := func(n int, f func(i int)) {
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteString(",")
			}
			f(i)
		}
	}
	var buf []byte
	switch a := a.(type) {
	case []uint8:
		each(len(a), func(i int) { b.Write(strconv.AppendUint(buf[:0], uint64(a[i]), 10)) })
	case []int8:
		each(len(a), func(i int) { b.Write(strconv.AppendInt(buf[:0], int64(a[i]), 10)) })
	case []uint16:
		each(len(a), func(i int) { b.Write(strconv.AppendUint(buf[:0], uint64(a[i]), 10)) })
	case []int16:
		each(len(a), func(i int) { b.Write(strconv.AppendInt(buf[:0], int64(a[i]), 10)) })
	case []uint32:
		each(len(a), func(i int) { b.Write(strconv.AppendUint(buf[:0], uint64(a[i]), 10)) })
	case []int32:
		each(len(a), func(i int) { b.Write(strconv.AppendInt(buf[:0], int64(a[i]), 10)) })
	case []uint64:
		each(len(a), func(i int) { b.Write(strconv.AppendUint(buf[:0], a[i], 10)) })
	case []int64:
		each(len(a), func(i int) { b.Write(strconv.AppendInt(buf[:0], a[i], 10)) })
	case []float32:
		each(len(a), func(i int) { writeJSONFloat(b, float64(a[i]), 32) })
	case []float64:
		each(len(a), func(i int) { writeJSONFloat(b, a[i], 64) })
	case []bool:
		each(len(a), func(i int) { b.WriteString(strconv.FormatBool(a[i])) })
	}
}

func writeJSONScalar(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case uint8:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case int8:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case uint16:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case int16:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case uint32:
		b.WriteString(strconv.FormatUint(uint64(x), 10))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case uint64:
		b.WriteString(strconv.FormatUint(x, 10))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float32:
		writeJSONFloat(b, float64(x), 32)
	case float64:
		writeJSONFloat(b, x, 64)
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		writeJSONString(b, x)
	}
}

func writeJSONFloat(b *bytes.Buffer, f float64, bits int) {
	switch {
	case math.IsNaN(f):
		b.WriteString(`"NaN"`)
	case math.IsInf(f, 1):
		b.WriteString(`"+Inf"`)
	case math.IsInf(f, -1):
		b.WriteString(`"-Inf"`)
	default:
		b.WriteString(strconv.FormatFloat(f, 'g', -1, bits))
	}
}

// ParseMetadataJSON decodes metadata written by MarshalMetadataJSON (the
// gguf-metadata.json asset) back into typed key/value pairs.
func ParseMetadataJSON(data []byte) ([]KV, error) {
	var items []jsonKV
	if err := json.Unmarshal(data, &items); err != nil {
		return nil, fmt.Errorf("gguf: metadata JSON: %w", err)
	}
	kvs := make([]KV, 0, len(items))
	seen := make(map[string]bool, len(items))
	for i, it := range items {
		if it.KeyB64 != "" {
			k, err := base64.StdEncoding.DecodeString(it.KeyB64)
			if err != nil {
				return nil, fmt.Errorf("gguf: metadata JSON: entry %d: key_base64: %w", i, err)
			}
			it.Key = string(k)
		}
		if seen[it.Key] {
			return nil, fmt.Errorf("gguf: metadata JSON: duplicate key %q", it.Key)
		}
		seen[it.Key] = true
		v, err := parseJSONValue(it, 0)
		if err != nil {
			return nil, fmt.Errorf("gguf: metadata JSON: entry %d (%q): %w", i, it.Key, err)
		}
		kvs = append(kvs, KV{Key: it.Key, Value: v})
	}
	return kvs, nil
}

func parseJSONValue(it jsonKV, depth int) (Value, error) {
	var v Value
	if depth > maxArrayDepth {
		return v, fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
	}
	t, ok := parseValueType(it.Type)
	if !ok {
		return v, fmt.Errorf("unknown type %q", it.Type)
	}
	v.Type = t
	b64 := false
	switch it.Encoding {
	case "":
	case "base64":
		b64 = true
	default:
		return v, fmt.Errorf("unknown encoding %q", it.Encoding)
	}
	if t != ValueArray {
		if it.Elem != "" {
			return v, fmt.Errorf("%s value with elem %q", t, it.Elem)
		}
		if b64 && t != ValueString {
			return v, fmt.Errorf("base64 encoding of a %s", t)
		}
		x, err := parseJSONScalar(t, it.Value, b64)
		v.V = x
		return v, err
	}
	et, ok := parseValueType(it.Elem)
	if !ok {
		return v, fmt.Errorf("unknown array element type %q", it.Elem)
	}
	v.Elem = et
	if b64 && et != ValueString {
		return v, fmt.Errorf("base64 encoding of an array of %s", et)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(it.Value, &raws); err != nil {
		return v, fmt.Errorf("array value: %w", err)
	}
	if raws == nil {
		raws = []json.RawMessage{}
	}
	n := len(raws)
	var err error
	elem := func(i int) any {
		if err != nil {
			return nil
		}
		var x any
		x, err = parseJSONScalar(et, raws[i], b64)
		if err != nil {
			err = fmt.Errorf("element %d: %w", i, err)
		}
		return x
	}
	switch et {
	case ValueArray:
		a := make([]Value, n)
		for i, r := range raws {
			var sub jsonKV
			if e := json.Unmarshal(r, &sub); e != nil {
				return v, fmt.Errorf("element %d: %w", i, e)
			}
			if sub.Type != "array" {
				return v, fmt.Errorf("element %d of an array of arrays has type %q", i, sub.Type)
			}
			if a[i], err = parseJSONValue(sub, depth+1); err != nil {
				return v, fmt.Errorf("element %d: %w", i, err)
			}
		}
		v.V = a
	case ValueUint8:
		a := make([]uint8, n)
		for i := range a {
			if x, ok := elem(i).(uint8); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueInt8:
		a := make([]int8, n)
		for i := range a {
			if x, ok := elem(i).(int8); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueUint16:
		a := make([]uint16, n)
		for i := range a {
			if x, ok := elem(i).(uint16); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueInt16:
		a := make([]int16, n)
		for i := range a {
			if x, ok := elem(i).(int16); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueUint32:
		a := make([]uint32, n)
		for i := range a {
			if x, ok := elem(i).(uint32); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueInt32:
		a := make([]int32, n)
		for i := range a {
			if x, ok := elem(i).(int32); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueUint64:
		a := make([]uint64, n)
		for i := range a {
			if x, ok := elem(i).(uint64); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueInt64:
		a := make([]int64, n)
		for i := range a {
			if x, ok := elem(i).(int64); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueFloat32:
		a := make([]float32, n)
		for i := range a {
			if x, ok := elem(i).(float32); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueFloat64:
		a := make([]float64, n)
		for i := range a {
			if x, ok := elem(i).(float64); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueBool:
		a := make([]bool, n)
		for i := range a {
			if x, ok := elem(i).(bool); ok {
				a[i] = x
			}
		}
		v.V = a
	case ValueString:
		a := make([]string, n)
		for i := range a {
			if x, ok := elem(i).(string); ok {
				a[i] = x
			}
		}
		v.V = a
	}
	return v, err
}

var errJSONNumber = errors.New("not a number of that type")

func parseJSONScalar(t ValueType, raw json.RawMessage, b64 bool) (any, error) {
	raw = bytes.TrimSpace(raw)
	switch t {
	case ValueString:
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("string value: %w", err)
		}
		if b64 {
			d, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return nil, fmt.Errorf("string value: %w", err)
			}
			s = string(d)
		}
		return s, nil
	case ValueBool:
		switch string(raw) {
		case "true":
			return true, nil
		case "false":
			return false, nil
		}
		return nil, fmt.Errorf("bool value %s", raw)
	case ValueFloat32, ValueFloat64:
		bits := 64
		if t == ValueFloat32 {
			bits = 32
		}
		var f float64
		switch string(raw) {
		case `"NaN"`:
			f = math.NaN()
		case `"+Inf"`:
			f = math.Inf(1)
		case `"-Inf"`:
			f = math.Inf(-1)
		default:
			if len(raw) == 0 || raw[0] == '"' || !json.Valid(raw) {
				return nil, fmt.Errorf("%s value %s", t, raw)
			}
			var err error
			f, err = strconv.ParseFloat(string(raw), bits)
			if err != nil {
				return nil, fmt.Errorf("%s value %s: %w", t, raw, err)
			}
		}
		if bits == 32 {
			return float32(f), nil
		}
		return f, nil
	}
	// Integers.
	s := string(raw)
	var signed bool
	var bits int
	switch t {
	case ValueUint8:
		bits = 8
	case ValueInt8:
		bits, signed = 8, true
	case ValueUint16:
		bits = 16
	case ValueInt16:
		bits, signed = 16, true
	case ValueUint32:
		bits = 32
	case ValueInt32:
		bits, signed = 32, true
	case ValueUint64:
		bits = 64
	case ValueInt64:
		bits, signed = 64, true
	default:
		return nil, fmt.Errorf("unexpected type %s", t)
	}
	if signed {
		i, err := strconv.ParseInt(s, 10, bits)
		if err != nil {
			return nil, fmt.Errorf("%s value %s: %w", t, s, errJSONNumber)
		}
		switch bits {
		case 8:
			return int8(i), nil
		case 16:
			return int16(i), nil
		case 32:
			return int32(i), nil
		}
		return i, nil
	}
	u, err := strconv.ParseUint(s, 10, bits)
	if err != nil {
		return nil, fmt.Errorf("%s value %s: %w", t, s, errJSONNumber)
	}
	switch bits {
	case 8:
		return uint8(u), nil
	case 16:
		return uint16(u), nil
	case 32:
		return uint32(u), nil
	}
	return u, nil
}
