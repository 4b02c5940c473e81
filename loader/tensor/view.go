package tensor

import (
	"encoding/binary"
	"unsafe"
)

// nativeLittle reports whether this machine stores float32 little endian,
// the byte order of every format nwc reads and writes.
var nativeLittle = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// Float32View returns the n float32 values stored little endian in b
// (len(b) >= 4n) as a []float32 sharing b's memory, so a decoder can write
// its output straight into the caller's bytes. ok is false when that is not
// possible (a big-endian machine, or b not 4-byte aligned); the caller
// then decodes into a []float32 and converts with F32Bytes.
func Float32View(b []byte, n int) (v []float32, ok bool) {
	if n == 0 {
		return []float32{}, true
	}
	if !nativeLittle || len(b) < 4*n || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%4 != 0 {
		return nil, false
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(b))), n), true
}
