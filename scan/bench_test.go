package scan

import (
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// BenchmarkScanLargeCheckpoint scans ~500 MB checkpoints written by
// python3-torch ($SECURETRAIN_BENCH_MB to change the size): a torch.save zip
// (only data.pkl is read), a legacy torch.save file, and a plain protocol-4
// pickle of NumPy arrays (every byte passes through the opcode walker).
func BenchmarkScanLargeCheckpoint(b *testing.B) {
	py := testenv.Python(b)
	mb := 500
	if s := os.Getenv("SECURETRAIN_BENCH_MB"); s != "" {
		mb, _ = strconv.Atoi(s)
	}
	dir := b.TempDir()
	script := `
import sys, pickle, torch, numpy as np
d, mb = sys.argv[1], int(sys.argv[2])
n = mb * (1 << 20) // 4 // 64
sd = {"layer%d.weight" % i: torch.zeros(n) for i in range(64)}
torch.save(sd, d + "/big.pt")
torch.save(sd, d + "/big_legacy.pt", _use_new_zipfile_serialization=False)
with open(d + "/big.pkl", "wb") as f:
    pickle.dump({k: v.numpy() for k, v in sd.items()}, f, protocol=4)
`
	if out, err := exec.Command(py, "-c", script, dir, strconv.Itoa(mb)).CombinedOutput(); err != nil {
		b.Fatalf("generate: %v\n%s", err, out)
	}
	for _, name := range []string{"big.pt", "big_legacy.pt", "big.pkl"} {
		p := filepath.Join(dir, name)
		st, err := os.Stat(p)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(st.Size())
			for i := 0; i < b.N; i++ {
				r, err := Scan(p)
				if err != nil || r.Verdict != Safe {
					b.Fatalf("%v %v %v", err, r.Verdict, r.Findings)
				}
			}
		})
		// The yardstick: reading and hashing every byte of the same file.
		b.Run("sha256/"+name, func(b *testing.B) {
			b.SetBytes(st.Size())
			for i := 0; i < b.N; i++ {
				f, err := os.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				h := sha256.New()
				if _, err := io.Copy(h, f); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
		os.Remove(p) // free the disk before the next one is read
	}
}
