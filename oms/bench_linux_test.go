package oms

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/pin"
)

// BenchmarkVerifyModel measures a full OMS verification of a model
// directory as the launcher does it (bundle signature and statement, then
// every file hashed by package pin, in parallel per file, no verification
// cache) against GNU sha256sum over the same files (one process). Size:
// $SECURETRAIN_BENCH_MB (default 1024) in 8 weight shards, a config and a
// tokenizer. The page cache is warm for both.
func BenchmarkVerifyModel(b *testing.B) {
	mb := testenv.BenchMB(1024)
	dir := filepath.Join(b.TempDir(), "model")
	os.MkdirAll(dir, 0o755)
	shard := make([]byte, (mb<<20)/8)
	rand.Read(shard)
	var paths []string
	var total int64
	write := func(name string, content []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, content, 0o644); err != nil {
			b.Fatal(err)
		}
		paths = append(paths, p)
		total += int64(len(content))
	}
	for i := range 8 {
		shard[0] = byte(i)
		write(fmt.Sprintf("model-%05d-of-00008.safetensors", i+1), shard)
	}
	write("config.json", []byte(`{"hidden_size": 4096}`))
	write("tokenizer.json", make([]byte, 2<<20))
	ctx := context.Background()
	es, err := pin.Manifest(ctx, dir)
	if err != nil {
		b.Fatal(err)
	}
	k := testenv.P256(b)
	s, _ := NewKeySigner(k, nil)
	st, _ := NewStatement("model", es, nil)
	bundle, err := Sign(ctx, st, s)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("oms", func(b *testing.B) {
		b.SetBytes(total)
		for range b.N {
			v, err := Verify(bundle, Trust{Key: k.Public()})
			if err != nil {
				b.Fatal(err)
			}
			p, _ := v.Pin(dir, true, "", nil)
			if r, err := pin.New(pin.Options{}).Verify(ctx, p); err != nil || r.Stats.Hashed != len(es) {
				b.Fatal(err, r.Stats)
			}
		}
	})
	testenv.Sha256sumBaseline(b, total, paths)
}
