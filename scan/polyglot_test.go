package scan

import (
	"bytes"
	"strings"
	"testing"

	mt "github.com/securetrain/securetrain/internal/modeltest"
)

func TestLegacyTarCheckpoint(t *testing.T) {
	r := ScanBytes("legacy.tar.pt", mt.LegacyTar(nil))
	if r.Verdict != Safe || r.Format != "pytorch-legacy-tar" {
		t.Fatalf("legacy tar checkpoint: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	// Every member is a pickle torch.load (or a loader) reads: a payload
	// in any of them is found.
	evil := mt.EvilPickle("touch /tmp/pwned")
	for name, data := range map[string][]byte{
		"sys_info": evil,
		"pickle":   evil,
		"storages": append(append(bytes.Clone(mt.LegacyStorageCount), evil...), mt.LegacyStorages[len(mt.LegacyStorageCount):]...),
		"tensors":  append(append(bytes.Clone(mt.LegacyStorageCount), evil...), mt.LegacyTensors[len(mt.LegacyStorageCount)+len(mt.LegacyTensorRecord):]...),
	} {
		r := ScanBytes("legacy.tar.pt", mt.LegacyTar(map[string][]byte{name: data}))
		if r.Verdict != Dangerous || !hasFinding(r, Dangerous, name) {
			t.Errorf("payload in member %s: %v %v", name, r.Verdict, r.Findings)
		}
	}
	// The count pickle itself can be the payload (num_storages =
	// pickle.load(f)).
	r = ScanBytes("legacy.tar.pt", mt.LegacyTar(map[string][]byte{"storages": append(bytes.Clone(evil), mt.LegacyStorages[len(mt.LegacyStorageCount):]...)}))
	if r.Verdict != Dangerous {
		t.Errorf("payload as the storage count: %v %v", r.Verdict, r.Findings)
	}
	// A symlink member: tarfile.extract makes the link and torch reads
	// what it points to, which the scan never saw.
	link := mt.Tar([]mt.TarMember{{Name: "sys_info", Data: mt.LegacySysInfo}, {Name: "pickle", Data: mt.LegacyPickle}, {Name: "storages", Type: '2', Data: nil}, {Name: "tensors", Data: mt.LegacyTensors}})
	if r := ScanBytes("l.pt", link); r.Verdict == Safe {
		t.Errorf("symlink member judged safe: %v", r.Findings)
	}
	// A member named twice: tarfile reads the last one.
	dup := mt.Tar([]mt.TarMember{{Name: "sys_info", Data: mt.LegacySysInfo}, {Name: "pickle", Data: mt.LegacyPickle}, {Name: "pickle", Data: evil},
		{Name: "storages", Data: mt.LegacyStorages}, {Name: "tensors", Data: mt.LegacyTensors}})
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
	b := mt.PickleTarPolyglot(mt.EvilPickle("touch /tmp/pwned"))
	r := ScanBytes("model.pt", b)
	if r.Verdict == Safe || !isAmbiguous(r, "tar", "pickle") {
		t.Fatalf("pickle+tar polyglot: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	if !hasFinding(r, Dangerous, "storages") {
		t.Errorf("the tar reading's payload is not reported: %v", r.Findings)
	}
	// Harmless in both readings, it is still refused as ambiguous.
	if r := ScanBytes("model.pt", mt.PickleTarPolyglot(mt.LegacyStorages)); r.Verdict != Malformed || !isAmbiguous(r, "tar", "pickle") {
		t.Fatalf("harmless polyglot: %v %v", r.Verdict, r.Findings)
	}
}

// TestPolyglotZip: a safe pickle with a zip appended (zipfile finds the
// directory at the end; torch.load, seeing no zip header, unpickles), and
// a safetensors file whose data is a zip archive.
func TestPolyglotZip(t *testing.T) {
	r := ScanBytes("m.pkl", mt.PickleZipPolyglot("touch /tmp/pwned"))
	if r.Verdict == Safe || !isAmbiguous(r, "zip", "pickle") {
		t.Fatalf("pickle+zip: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	r = ScanBytes("m.safetensors", mt.SafetensorsZipPolyglot("touch /tmp/pwned"))
	if r.Verdict == Safe || !isAmbiguous(r, "zip", "safetensors") {
		t.Fatalf("safetensors+zip: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	if r := ScanBytes("m.safetensors", mt.Safetensors(map[string][]float32{"w": {1, 2}, "b": {3}})); r.Verdict != Safe {
		t.Fatalf("control: safetensors: %v %v", r.Verdict, r.Findings)
	}
}

func FuzzScanTar(f *testing.F) {
	f.Add(mt.LegacyTar(nil))
	f.Add(mt.PickleTarPolyglot(mt.LegacyStorages))
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

// TestLegacyPickleSequence: the legacy (non-tar) torch.save format is
// five pickles back to back (magic number, protocol version, sys_info,
// the data, the storage keys) and raw storage bytes. torch.load unpickles
// all five, so a payload in any of them is found.
func TestLegacyPickleSequence(t *testing.T) {
	pickles := [][]byte{torchLegacyMagic, []byte("\x80\x02M\xe9\x03."), []byte("\x80\x02}q\x00."), mt.SafeDataPkl, []byte("\x80\x02]q\x00.")}
	build := func(evilAt int) []byte {
		var b []byte
		for i, p := range pickles {
			if i == evilAt {
				p = mt.EvilPickle("touch /tmp/pwned")
			}
			b = append(b, p...)
		}
		return append(b, make([]byte, 64)...) // raw storage bytes
	}
	if r := ScanBytes("l.pt", build(-1)); r.Verdict != Safe || r.Format != "pytorch-legacy" {
		t.Fatalf("control: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
	for i := 1; i < len(pickles); i++ {
		if r := ScanBytes("l.pt", build(i)); r.Verdict != Dangerous {
			t.Errorf("payload in pickle %d: %v %s %v", i+1, r.Verdict, r.Format, r.Findings)
		}
	}
}

// TestPolyglotZipThatIsAPickle: a torch zip whose first member's name
// ends its local header's PERSID line and then reads as NONE, STOP: an
// unpickler with a persistent_load (torch's own) reads it as a pickle.
func TestPolyglotZipThatIsAPickle(t *testing.T) {
	b := mt.Zip(map[string][]byte{"archive/\nN.": nil, "archive/data.pkl": mt.SafeDataPkl, "archive/version": []byte("3\n")},
		"archive/\nN.", "archive/data.pkl", "archive/version")
	if i := bytes.IndexByte(b, '\n'); i != 30+len("archive/") {
		t.Skipf("the local header holds a newline at %d: no pickle reading", i)
	}
	if r := ScanBytes("m.pt", b); r.Verdict == Safe || !isAmbiguous(r, "zip", "pickle") {
		t.Fatalf("zip+pickle: %v %s %v", r.Verdict, r.Format, r.Findings)
	}
}
