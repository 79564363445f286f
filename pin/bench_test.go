//go:build linux

package pin

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

// BenchmarkVerify compares verification throughput, on the same files in
// the same run: without the cache (every byte hashed, GOMAXPROCS workers),
// from the cache (one stat per file), and GNU sha256sum (one process).
// Size: $SECURETRAIN_BENCH_MB (default 256) in 16 large files plus 512
// small ones. The page cache is warm for all three ("cold" means no
// verification cache, not a cold disk).
func BenchmarkVerify(b *testing.B) {
	mb := testenv.BenchMB(256)
	dir := b.TempDir()
	var total int64
	big := make([]byte, (mb<<20)*3/4/16)
	small := make([]byte, (mb<<20)/4/512)
	rand.Read(big)
	rand.Read(small)
	var paths []string
	for i := 0; i < 16; i++ {
		p := filepath.Join(dir, fmt.Sprintf("shard-%02d.bin", i))
		big[0] = byte(i)
		os.WriteFile(p, big, 0o644)
		paths = append(paths, p)
		total += int64(len(big))
	}
	for i := 0; i < 512; i++ {
		p := filepath.Join(dir, "small", fmt.Sprintf("%03d.jpg", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		small[0], small[1] = byte(i), byte(i>>8)
		os.WriteFile(p, small, 0o644)
		paths = append(paths, p)
		total += int64(len(small))
	}
	ctx := context.Background()
	es, err := Manifest(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	p := Pin{Path: dir, Dir: true, Manifest: es}

	b.Run("cold", func(b *testing.B) {
		b.SetBytes(total)
		for i := 0; i < b.N; i++ {
			r, err := New(Options{}).Verify(ctx, p)
			if err != nil || r.Stats.Hashed != len(es) {
				b.Fatal(err, r.Stats)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c, err := OpenCache(filepath.Join(b.TempDir(), "cache"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := New(Options{Cache: c}).Verify(ctx, p); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(total)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			r, err := New(Options{Cache: c}).Verify(ctx, p)
			if err != nil || r.Stats.Cached != len(es) {
				b.Fatal(err, r.Stats)
			}
		}
	})
	testenv.Sha256sumBaseline(b, total, paths)
}
