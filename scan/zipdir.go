package scan

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// PyTorch's reader (miniz, in caffe2's inline_container.cc) and Python's
// zipfile (np.load of an .npz) do not read zip archives exactly as Go's
// archive/zip does. This file checks the places where they could
// disagree about which bytes a member name stands for: names that are
// equal to miniz's case-insensitive lookup, and local headers that say
// something else than the central directory.

// zipEntry is one central directory record.
type zipEntry struct {
	name                 string
	flags, method        uint16
	crc                  uint32
	csize, usize, offset uint64
}

const zip64Marker = 0xffffffff

// zipCentralDirectory reads the central directory the way archive/zip
// finds it (the last end record whose comment fits), without prefix data.
func zipCentralDirectory(r io.ReaderAt, size int64) ([]zipEntry, error) {
	tail := make([]byte, min(size, 65535+22))
	if _, err := r.ReadAt(tail, size-int64(len(tail))); err != nil {
		return nil, err
	}
	end := -1
	for i := len(tail) - 22; i >= 0; i-- {
		if string(tail[i:i+4]) == "PK\x05\x06" && i+22+int(binary.LittleEndian.Uint16(tail[i+20:])) <= len(tail) {
			end = i
			break
		}
	}
	if end < 0 {
		return nil, fmt.Errorf("no end of central directory")
	}
	e := tail[end:]
	count := uint64(binary.LittleEndian.Uint16(e[10:]))
	dirOff := uint64(binary.LittleEndian.Uint32(e[16:]))
	endOff := size - int64(len(tail)) + int64(end)
	if count == 0xffff || dirOff == zip64Marker {
		// Zip64: the locator sits right before the end record.
		loc := make([]byte, 20)
		if endOff < 20 {
			return nil, fmt.Errorf("zip64 locator missing")
		}
		if _, err := r.ReadAt(loc, endOff-20); err != nil || string(loc[:4]) != "PK\x06\x07" {
			return nil, fmt.Errorf("zip64 locator missing")
		}
		rec := make([]byte, 56)
		if _, err := r.ReadAt(rec, int64(binary.LittleEndian.Uint64(loc[8:]))); err != nil || string(rec[:4]) != "PK\x06\x06" {
			return nil, fmt.Errorf("zip64 end record missing")
		}
		count = binary.LittleEndian.Uint64(rec[32:])
		dirOff = binary.LittleEndian.Uint64(rec[48:])
	}
	if count > uint64(size)/46 {
		return nil, fmt.Errorf("%d entries cannot fit", count)
	}
	var out []zipEntry
	off := int64(dirOff)
	for i := uint64(0); i < count; i++ {
		h := make([]byte, 46)
		if _, err := r.ReadAt(h, off); err != nil || string(h[:4]) != "PK\x01\x02" {
			return nil, fmt.Errorf("central directory record %d missing", i)
		}
		nl, xl, cl := int64(binary.LittleEndian.Uint16(h[28:])), int64(binary.LittleEndian.Uint16(h[30:])), int64(binary.LittleEndian.Uint16(h[32:]))
		nx := make([]byte, nl+xl)
		if _, err := r.ReadAt(nx, off+46); err != nil {
			return nil, fmt.Errorf("central directory record %d truncated", i)
		}
		z := zipEntry{
			name: string(nx[:nl]), flags: binary.LittleEndian.Uint16(h[8:]), method: binary.LittleEndian.Uint16(h[10:]),
			crc: binary.LittleEndian.Uint32(h[16:]), csize: uint64(binary.LittleEndian.Uint32(h[20:])),
			usize: uint64(binary.LittleEndian.Uint32(h[24:])), offset: uint64(binary.LittleEndian.Uint32(h[42:])),
		}
		zip64Extra(&z, nx[nl:])
		out = append(out, z)
		off += 46 + nl + xl + cl
	}
	return out, nil
}

// zip64Extra fills the fields a zip64 extra record (id 1) carries, in
// its order: the ones set to 0xffffffff.
func zip64Extra(z *zipEntry, extra []byte) {
	for len(extra) >= 4 {
		id, n := binary.LittleEndian.Uint16(extra), int(binary.LittleEndian.Uint16(extra[2:]))
		if 4+n > len(extra) {
			return
		}
		body := extra[4 : 4+n]
		if id == 1 {
			for _, f := range []*uint64{&z.usize, &z.csize, &z.offset} {
				if *f == zip64Marker && len(body) >= 8 {
					*f = binary.LittleEndian.Uint64(body)
					body = body[8:]
				}
			}
		}
		extra = extra[4+n:]
	}
}

// asciiLower is miniz's MZ_TOLOWER over a name.
func asciiLower(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// checkZipConsistency reports names that PyTorch's case-insensitive
// lookup cannot tell apart (it takes the first, Go's and Python's readers
// other ones), and members whose local header names another file or
// another method, or other sizes or checksum, than the central directory.
func checkZipConsistency(r io.ReaderAt, size int64, rep *Report) {
	ents, err := zipCentralDirectory(r, size)
	if err != nil {
		rep.add(Finding{Verdict: Malformed, Detail: "zip central directory: " + err.Error()})
		return
	}
	seen := map[string]string{}
	for _, z := range ents {
		k := asciiLower(z.name)
		if first, dup := seen[k]; dup {
			rep.add(Finding{Verdict: Malformed, Member: z.name, Detail: fmt.Sprintf("zip member name used twice (%q and %q are one name to PyTorch's lookup, which ignores case)", first, z.name)})
			continue
		}
		seen[k] = z.name
		lh := make([]byte, 30)
		if _, err := r.ReadAt(lh, int64(z.offset)); err != nil || string(lh[:4]) != "PK\x03\x04" {
			rep.add(Finding{Verdict: Malformed, Member: z.name, Detail: "zip member without a local header where the directory says"})
			continue
		}
		nl := int(binary.LittleEndian.Uint16(lh[26:]))
		name := make([]byte, nl)
		r.ReadAt(name, int64(z.offset)+30)
		flags, method := binary.LittleEndian.Uint16(lh[6:]), binary.LittleEndian.Uint16(lh[8:])
		crc, cs, us := binary.LittleEndian.Uint32(lh[14:]), binary.LittleEndian.Uint32(lh[18:]), binary.LittleEndian.Uint32(lh[22:])
		var why string
		switch {
		case !bytes.Equal(name, []byte(z.name)):
			why = fmt.Sprintf("its local header names %q", name)
		case method != z.method:
			why = fmt.Sprintf("its local header says compression method %d, the directory %d", method, z.method)
		case flags&8 == 0 && (crc != z.crc || cs != zip64Marker && uint64(cs) != z.csize || us != zip64Marker && uint64(us) != z.usize):
			why = "its local header's sizes or checksum differ from the directory's"
		}
		if why != "" {
			rep.add(Finding{Verdict: Malformed, Member: z.name, Detail: "zip member disagrees with itself: " + why})
		}
	}
}
