package scan

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// tarMember is one member of a Go-built tar archive.
type tarMember struct {
	name string
	typ  byte
	data []byte
}

// tarHeaderBlock writes a ustar header the way Python's tarfile does.
func tarHeaderBlock(name string, typ byte, size int) []byte {
	b := make([]byte, tarBlock)
	copy(b, name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x0000")
	setTarChecksum(b)
	return b
}

func setTarChecksum(b []byte) {
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:tarBlock] {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
}

func tarArchive(ms []tarMember) []byte {
	var out []byte
	for _, m := range ms {
		typ := m.typ
		if typ == 0 {
			typ = '0'
		}
		out = append(out, tarHeaderBlock(m.name, typ, len(m.data))...)
		out = append(out, m.data...)
		out = append(out, make([]byte, (tarBlock-len(m.data)%tarBlock)%tarBlock)...)
	}
	return append(out, make([]byte, 2*tarBlock)...)
}

func i64(n int64) []byte { return binary.LittleEndian.AppendUint64(nil, uint64(n)) }

// Pickles of a legacy torch tar checkpoint holding {"w": FloatTensor of
// four ones}, written by hand in protocol 2 (torch no longer writes the
// tar format, but torch.load still reads it).
var (
	legacySysInfo  = []byte("\x80\x02}q\x00.")
	legacyStorages = bytes.Join([][]byte{
		[]byte("\x80\x02K\x01."), // one storage
		[]byte("\x80\x02K\x01X\x03\x00\x00\x00cpuctorch\nFloatStorage\n\x87."), // (key 1, 'cpu', torch.FloatStorage)
		i64(4), bytes.Repeat([]byte("\x00\x00\x80\x3f"), 4), // 4 elements of 1.0
		[]byte("\x80\x02]."), // no storage views
	}, nil)
	legacyTensors = bytes.Join([][]byte{
		[]byte("\x80\x02K\x01."),                               // one tensor
		[]byte("\x80\x02K\x02K\x01ctorch\nFloatTensor\n\x87."), // (key 2, storage 1, torch.FloatTensor)
		{1, 0, 0, 0, 0, 0, 0, 0}, i64(4), i64(1), i64(0),       // ndim 1, 4 bytes skipped, size, stride, offset
	}, nil)
	legacyPickle = []byte("\x80\x02}q\x00X\x01\x00\x00\x00wX\x01\x00\x00\x002Qs.") // {'w': persistent id '2'}
)

func legacyTar(over map[string][]byte) []byte {
	ms := []tarMember{{"sys_info", 0, legacySysInfo}, {"pickle", 0, legacyPickle}, {"storages", 0, legacyStorages}, {"tensors", 0, legacyTensors}}
	for i := range ms {
		if b, ok := over[ms[i].name]; ok {
			ms[i].data = b
		}
	}
	return tarArchive(ms)
}

// pickleTarPolyglot is the confirmed bypass: a pickle (PROTO 4, one
// BINBYTES8 over everything after it, STOP) whose bytes are also a tar
// archive. The pickle is harmless; torch.load opens the tar first and
// unpickles its storages member.
func pickleTarPolyglot(storages []byte) []byte {
	tail := tarArchive([]tarMember{{"x", 0, nil}, {"sys_info", 0, legacySysInfo}, {"pickle", 0, legacyPickle},
		{"storages", 0, storages}, {"tensors", 0, []byte("\x80\x02K\x00.")}})
	b := append(tail, '.')
	// PROTO 4, BINBYTES8 <len>: the first 11 bytes of the tar's first
	// member name; its checksum is recomputed over them.
	copy(b, []byte("\x80\x04\x8e"))
	binary.LittleEndian.PutUint64(b[3:11], uint64(len(b)-12))
	setTarChecksum(b)
	return b
}

func TestLegacyTarCheckpoint(t *testing.T) {
	r := ScanBytes("legacy.tar.pt", legacyTar(nil))
	if r.Verdict != Safe || r.Format != "pytorch-legacy-tar" {
		t.Fatalf("legacy tar checkpoint: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	// Every member is a pickle torch.load (or a loader) reads: a payload
	// in any of them is found.
	evil := evilPickle("touch /tmp/pwned")
	for name, data := range map[string][]byte{
		"sys_info": evil,
		"pickle":   evil,
		"storages": append(append([]byte("\x80\x02K\x01."), evil...), legacyStorages[5:]...),
		"tensors":  append(append([]byte("\x80\x02K\x01."), evil...), legacyTensors[len("\x80\x02K\x01.")+len("\x80\x02K\x02K\x01ctorch\nFloatTensor\n\x87."):]...),
	} {
		r := ScanBytes("legacy.tar.pt", legacyTar(map[string][]byte{name: data}))
		if r.Verdict != Dangerous || !hasFinding(r, Dangerous, name) {
			t.Errorf("payload in member %s: %v %v", name, r.Verdict, r.Findings)
		}
	}
	// The count pickle itself can be the payload (num_storages =
	// pickle.load(f)).
	r = ScanBytes("legacy.tar.pt", legacyTar(map[string][]byte{"storages": append(evil, legacyStorages[5:]...)}))
	if r.Verdict != Dangerous {
		t.Errorf("payload as the storage count: %v %v", r.Verdict, r.Findings)
	}
	// A symlink member: tarfile.extract makes the link and torch reads
	// what it points to, which the scan never saw.
	link := tarArchive([]tarMember{{"sys_info", 0, legacySysInfo}, {"pickle", 0, legacyPickle}, {"storages", '2', nil}, {"tensors", 0, legacyTensors}})
	if r := ScanBytes("l.pt", link); r.Verdict == Safe {
		t.Errorf("symlink member judged safe: %v", r.Findings)
	}
	// A member named twice: tarfile reads the last one.
	dup := tarArchive([]tarMember{{"sys_info", 0, legacySysInfo}, {"pickle", 0, legacyPickle}, {"pickle", 0, evil},
		{"storages", 0, legacyStorages}, {"tensors", 0, legacyTensors}})
	if r := ScanBytes("d.pt", dup); r.Verdict == Safe {
		t.Errorf("duplicate member judged safe: %v", r.Findings)
	}
}

func hasFinding(r *Report, v Verdict, member string) bool {
	for _, f := range r.Findings {
		if f.Verdict == v && f.Member == member {
			return true
		}
	}
	return false
}

func isAmbiguous(r *Report, formats ...string) bool {
	for _, f := range r.Findings {
		if f.Verdict == Malformed && strings.Contains(f.Detail, "ambiguous") {
			for _, name := range formats {
				if !strings.Contains(f.Detail, name) {
					return false
				}
			}
			return true
		}
	}
	return false
}

// TestPolyglotPickleTar is the confirmed bypass: it scanned as a safe
// pickle while torch.load runs the tar's storages payload.
func TestPolyglotPickleTar(t *testing.T) {
	b := pickleTarPolyglot(evilPickle("touch /tmp/pwned"))
	r := ScanBytes("model.pt", b)
	if r.Verdict == Safe || !isAmbiguous(r, "tar", "pickle") {
		t.Fatalf("pickle+tar polyglot: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	if !hasFinding(r, Dangerous, "storages") {
		t.Errorf("the tar reading's payload is not reported: %v", r.Findings)
	}
	// Harmless in both readings, it is still refused as ambiguous.
	if r := ScanBytes("model.pt", pickleTarPolyglot(legacyStorages)); r.Verdict != Malformed || !isAmbiguous(r, "tar", "pickle") {
		t.Fatalf("harmless polyglot: %v %v", r.Verdict, r.Findings)
	}
}

func zipOf(t *testing.T, files map[string][]byte, names ...string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: n, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(files[n])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestPolyglotZip: a safe pickle with a zip appended (zipfile finds the
// directory at the end; torch.load, seeing no zip header, unpickles), and
// a safetensors file whose data is a zip archive.
func TestPolyglotZip(t *testing.T) {
	evilZip := zipOf(t, map[string][]byte{"archive/data.pkl": evilPickle("touch /tmp/pwned")}, "archive/data.pkl")
	b := append([]byte("\x80\x04K\x01."), evilZip...)
	b = append(b[:0:0], b...)
	r := ScanBytes("m.pkl", b)
	if r.Verdict == Safe || !isAmbiguous(r, "zip", "pickle") {
		t.Fatalf("pickle+zip: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	hdr, _ := json.Marshal(map[string]any{"w": map[string]any{"dtype": "U8", "shape": []int{len(evilZip)}, "data_offsets": []int{0, len(evilZip)}}})
	st := append(binary.LittleEndian.AppendUint64(nil, uint64(len(hdr))), hdr...)
	st = append(st, evilZip...)
	r = ScanBytes("m.safetensors", st)
	if r.Verdict == Safe || !isAmbiguous(r, "zip", "safetensors") {
		t.Fatalf("safetensors+zip: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
}

func FuzzScanTar(f *testing.F) {
	f.Add(legacyTar(nil))
	f.Add(pickleTarPolyglot(legacyStorages))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := ScanBytes("fuzz", b)
		for _, fd := range r.Findings {
			if strings.Contains(fd.Detail, "scanner error") {
				t.Fatalf("scanner panicked: %s", fd.Detail)
			}
		}
		if r.Verdict == Safe && isTar(b) && r.Format != "pytorch-legacy-tar" {
			t.Fatalf("a tar judged safe as %s", r.Format)
		}
	})
}
