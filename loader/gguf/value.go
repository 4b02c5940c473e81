package gguf

import (
	"fmt"
	"math"
)

// ValueType is the type of a GGUF metadata value (enum gguf_type).
type ValueType uint32

// GGUF metadata value types.
const (
	ValueUint8    ValueType = 0
	ValueInt8     ValueType = 1
	ValueUint16   ValueType = 2
	ValueInt16    ValueType = 3
	ValueUint32   ValueType = 4
	ValueInt32    ValueType = 5
	ValueFloat32  ValueType = 6
	ValueBool     ValueType = 7
	ValueString   ValueType = 8
	ValueArray    ValueType = 9
	ValueUint64   ValueType = 10
	ValueInt64    ValueType = 11
	ValueFloat64  ValueType = 12
	numValueTypes ValueType = 13
)

var valueTypeNames = [numValueTypes]string{
	"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
	"string", "array", "uint64", "int64", "float64",
}

// valueSizes is the encoded size of scalar types (0: variable).
var valueSizes = [numValueTypes]int64{1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8}

func (t ValueType) String() string {
	if t < numValueTypes {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("gguf_type(%d)", uint32(t))
}

// Valid reports whether t is a known value type.
func (t ValueType) Valid() bool { return t < numValueTypes }

func parseValueType(s string) (ValueType, bool) {
	for i, n := range valueTypeNames {
		if n == s {
			return ValueType(i), true
		}
	}
	return 0, false
}

// KV is one metadata key/value pair.
type KV struct {
	Key   string
	Value Value
}

// Value is a typed GGUF metadata value.
//
// V holds, by Type: uint8, int8, uint16, int16, uint32, int32, float32, bool,
// string, uint64, int64 or float64. For ValueArray, Elem is the element type
// and V is a slice of the element's Go type ([]string, []int32, ...), or
// []Value (each itself an array) when Elem is ValueArray.
type Value struct {
	Type ValueType
	Elem ValueType
	V    any
}

// Len returns the number of elements of an array value (0 otherwise).
func (v Value) Len() int {
	switch a := v.V.(type) {
	case []uint8:
		return len(a)
	case []int8:
		return len(a)
	case []uint16:
		return len(a)
	case []int16:
		return len(a)
	case []uint32:
		return len(a)
	case []int32:
		return len(a)
	case []float32:
		return len(a)
	case []bool:
		return len(a)
	case []string:
		return len(a)
	case []uint64:
		return len(a)
	case []int64:
		return len(a)
	case []float64:
		return len(a)
	case []Value:
		return len(a)
	}
	return 0
}

// Uint returns an integer value as uint64 (false for other types and for
// negative values).
func (v Value) Uint() (uint64, bool) {
	switch x := v.V.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	}
	i, ok := v.signed()
	if !ok || i < 0 {
		return 0, false
	}
	return uint64(i), true
}

func (v Value) signed() (int64, bool) {
	switch x := v.V.(type) {
	case int8:
		return int64(x), true
	case int16:
		return int64(x), true
	case int32:
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// Int returns an integer value as int64 (false for other types and for
// values that do not fit).
func (v Value) Int() (int64, bool) {
	if i, ok := v.signed(); ok {
		return i, true
	}
	u, ok := v.Uint()
	if !ok || u > math.MaxInt64 {
		return 0, false
	}
	return int64(u), true
}

// Float returns a float32/float64 value as float64.
func (v Value) Float() (float64, bool) {
	switch x := v.V.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// Str returns a string value.
func (v Value) Str() (string, bool) {
	s, ok := v.V.(string)
	return s, ok
}

// Bool returns a bool value.
func (v Value) Bool() (bool, bool) {
	b, ok := v.V.(bool)
	return b, ok
}

// Strings returns an array of strings.
func (v Value) Strings() ([]string, bool) {
	s, ok := v.V.([]string)
	return s, ok
}

// check verifies that V has the Go type Type/Elem call for.
func (v Value) check(depth int) error {
	if depth > maxArrayDepth {
		return fmt.Errorf("arrays nested deeper than %d", maxArrayDepth)
	}
	if !v.Type.Valid() {
		return fmt.Errorf("unknown value type %d", uint32(v.Type))
	}
	var ok bool
	switch v.Type {
	case ValueUint8:
		_, ok = v.V.(uint8)
	case ValueInt8:
		_, ok = v.V.(int8)
	case ValueUint16:
		_, ok = v.V.(uint16)
	case ValueInt16:
		_, ok = v.V.(int16)
	case ValueUint32:
		_, ok = v.V.(uint32)
	case ValueInt32:
		_, ok = v.V.(int32)
	case ValueFloat32:
		_, ok = v.V.(float32)
	case ValueBool:
		_, ok = v.V.(bool)
	case ValueString:
		_, ok = v.V.(string)
	case ValueUint64:
		_, ok = v.V.(uint64)
	case ValueInt64:
		_, ok = v.V.(int64)
	case ValueFloat64:
		_, ok = v.V.(float64)
	case ValueArray:
		switch v.Elem {
		case ValueUint8:
			_, ok = v.V.([]uint8)
		case ValueInt8:
			_, ok = v.V.([]int8)
		case ValueUint16:
			_, ok = v.V.([]uint16)
		case ValueInt16:
			_, ok = v.V.([]int16)
		case ValueUint32:
			_, ok = v.V.([]uint32)
		case ValueInt32:
			_, ok = v.V.([]int32)
		case ValueFloat32:
			_, ok = v.V.([]float32)
		case ValueBool:
			_, ok = v.V.([]bool)
		case ValueString:
			_, ok = v.V.([]string)
		case ValueUint64:
			_, ok = v.V.([]uint64)
		case ValueInt64:
			_, ok = v.V.([]int64)
		case ValueFloat64:
			_, ok = v.V.([]float64)
		case ValueArray:
			var vs []Value
			vs, ok = v.V.([]Value)
			for _, e := range vs {
				if e.Type != ValueArray {
					return fmt.Errorf("array of arrays holds a %s", e.Type)
				}
				if err := e.check(depth + 1); err != nil {
					return err
				}
			}
		default:
			return fmt.Errorf("unknown array element type %d", uint32(v.Elem))
		}
	}
	if !ok {
		if v.Type == ValueArray {
			return fmt.Errorf("array of %s holds %T", v.Elem, v.V)
		}
		return fmt.Errorf("%s value holds %T", v.Type, v.V)
	}
	return nil
}
