package scan

import (
	"bytes"
	"strings"
	"testing"

	mt "github.com/securetrain/securetrain/internal/modeltest"
)

func TestTorchZipLookup(t *testing.T) {
	r := ScanBytes("m.pt", mt.TorchZipCaseBypass("touch /tmp/pwned"))
	if r.Verdict != Dangerous || !hasFinding(r, Dangerous, "archive/DATA.PKL") {
		t.Fatalf("upper-case DATA.PKL: %v %v", r.Verdict, r.Findings)
	}
	// Names PyTorch cannot tell apart are refused even when harmless.
	b := mt.Zip(map[string][]byte{"archive/Data.pkl": mt.SafeDataPkl, "archive/data.pkl": mt.SafeDataPkl, "archive/version": []byte("3\n")},
		"archive/Data.pkl", "archive/data.pkl", "archive/version")
	if r := ScanBytes("m.pt", b); r.Verdict != Malformed || !strings.Contains(r.Summary(), "twice") {
		t.Fatalf("names equal but for case: %v %v", r.Verdict, r.Findings)
	}
	// Any pickle member, in any directory, is scanned.
	b = mt.Zip(map[string][]byte{"archive/data.pkl": mt.SafeDataPkl, "archive/extra/constants.pkl": mt.EvilPickle("x"), "archive/version": []byte("3\n")},
		"archive/data.pkl", "archive/extra/constants.pkl", "archive/version")
	if r := ScanBytes("m.pt", b); r.Verdict != Dangerous {
		t.Fatalf("second pickle member: %v %v", r.Verdict, r.Findings)
	}
	// An .npy member of a torch zip is read by np.load as an .npz.
	b = mt.Zip(map[string][]byte{"archive/data.pkl": mt.SafeDataPkl, "archive/x.npy": mt.NpyFile("{'descr': 'object', 'fortran_order': False, 'shape': (1,), }", mt.EvilPickle("x")), "archive/version": []byte("3\n")},
		"archive/data.pkl", "archive/x.npy", "archive/version")
	if r := ScanBytes("m.pt", b); r.Verdict != Dangerous {
		t.Fatalf("npy member of a torch zip: %v %v", r.Verdict, r.Findings)
	}
}

func TestZipLocalHeaderDisagrees(t *testing.T) {
	good := mt.Zip(map[string][]byte{"archive/data.pkl": mt.SafeDataPkl, "archive/version": []byte("3\n")}, "archive/data.pkl", "archive/version")
	if r := ScanBytes("m.pt", good); r.Verdict != Safe {
		t.Fatalf("control: %v %v", r.Verdict, r.Findings)
	}
	// The local header names another file than the directory.
	b := bytes.Clone(good)
	i := bytes.Index(b, []byte("archive/data.pkl"))
	copy(b[i:], "archive/evil.pkl")
	if r := ScanBytes("m.pt", b); r.Verdict != Malformed || !strings.Contains(r.Summary(), "local header") {
		t.Fatalf("local name differs: %v %v", r.Verdict, r.Findings)
	}
	// The local header says deflate, the directory stored.
	b = bytes.Clone(good)
	b[8] = 8
	if r := ScanBytes("m.pt", b); r.Verdict != Malformed {
		t.Fatalf("local method differs: %v %v", r.Verdict, r.Findings)
	}
}

func FuzzScanZip(f *testing.F) {
	// Seeds: Go-built archives shaped like torch.save's; the fixtures
	// written by python3-torch are seeds of FuzzScanPickle and the tests.
	f.Add([]byte("PK\x05\x06\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := ScanBytes("fuzz.pt", b)
		for _, fd := range r.Findings {
			if strings.Contains(fd.Detail, "scanner error") {
				t.Fatalf("scanner panicked: %s", fd.Detail)
			}
		}
	})
}
