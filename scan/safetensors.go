package scan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"sort"
)

// maxSafetensorsHeader is the limit of the reference implementation.
const maxSafetensorsHeader = 100 << 20

var safetensorsBits = map[string]uint64{
	"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
	"I16": 16, "U16": 16, "F16": 16, "BF16": 16,
	"I32": 32, "U32": 32, "F32": 32, "C64": 64,
	"F64": 64, "I64": 64, "U64": 64,
	"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}

func isSafetensors(h []byte, size int64) bool {
	if len(h) < 10 {
		return false
	}
	n := le64(h[:8])
	return n >= 2 && n <= maxSafetensorsHeader && int64(n) <= size-8 && h[8] == '{'
}

// scanSafetensors validates the header: JSON, known dtypes, sizes that match
// shapes, and offsets that cover the data buffer exactly, without holes or
// overlaps. safetensors holds no code; a bad header is Malformed.
func scanSafetensors(r io.ReaderAt, size int64, rep *Report) {
	bad := func(format string, a ...any) {
		rep.add(Finding{Verdict: Malformed, Detail: "safetensors: " + fmt.Sprintf(format, a...)})
	}
	lb := make([]byte, 8)
	if _, err := r.ReadAt(lb, 0); err != nil {
		bad("truncated")
		return
	}
	n := le64(lb)
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		bad("truncated header")
		return
	}
	dataLen := uint64(size) - 8 - n
	var top map[string]json.RawMessage
	if err := json.Unmarshal(bytes.TrimRight(hdr, " "), &top); err != nil {
		bad("header is not a JSON object: %v", err)
		return
	}
	type span struct {
		name       string
		begin, end uint64
	}
	var spans []span
	for name, raw := range top {
		if name == "__metadata__" {
			var md map[string]string
			if err := json.Unmarshal(raw, &md); err != nil {
				bad("__metadata__ must map strings to strings")
				return
			}
			continue
		}
		var t struct {
			Dtype   string   `json:"dtype"`
			Shape   []uint64 `json:"shape"`
			Offsets []uint64 `json:"data_offsets"`
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			bad("tensor %q: %v", name, err)
			return
		}
		b, ok := safetensorsBits[t.Dtype]
		if !ok {
			bad("tensor %q: unknown dtype %q", name, t.Dtype)
			return
		}
		if len(t.Offsets) != 2 || t.Offsets[0] > t.Offsets[1] || t.Offsets[1] > dataLen {
			bad("tensor %q: data_offsets %v outside the %d-byte buffer", name, t.Offsets, dataLen)
			return
		}
		nel := uint64(1)
		for _, d := range t.Shape {
			hi, lo := bits.Mul64(nel, d)
			if hi != 0 {
				bad("tensor %q: shape overflows", name)
				return
			}
			nel = lo
		}
		hi, nbits := bits.Mul64(nel, b)
		if hi != 0 || nbits%8 != 0 || nbits/8 != t.Offsets[1]-t.Offsets[0] {
			bad("tensor %q: %d bytes for shape %v of %s", name, t.Offsets[1]-t.Offsets[0], t.Shape, t.Dtype)
			return
		}
		spans = append(spans, span{name, t.Offsets[0], t.Offsets[1]})
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].end < spans[j].end
	})
	var at uint64
	for _, s := range spans {
		if s.begin != at {
			bad("tensor %q starts at %d, expected %d (hole or overlap)", s.name, s.begin, at)
			return
		}
		at = s.end
	}
	if at != dataLen {
		bad("tensors cover %d of %d data bytes", at, dataLen)
	}
}
