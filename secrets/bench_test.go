package secrets

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/jobstate"
)

// BenchmarkIssue measures the time Issue adds to job start for N dynamic
// Postgres credentials (each creates a real Postgres role), against a local
// Vault dev server. Revoke runs outside the timer.
func BenchmarkIssue(b *testing.B) {
	testenv.RequireRoot(b)
	v := testenv.StartVault(b)
	f := testenv.SetupVault(b, v, testenv.Postgres(b))
	root, err := os.MkdirTemp("", "securetrain-secrets-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(root) })
	c, err := NewClient(context.Background(), ClientConfig{Address: v.Addr, Auth: Auth{Token: f.LauncherToken(b)}}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, n := range []int{1, 5} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) {
			var secs []Secret
			for i := range n {
				secs = append(secs, Secret{Path: "database/creds/" + testenv.DBRole,
					Files: map[string]string{"password": fmt.Sprintf("/run/secrets/db%d/password", i)},
					Env:   map[string]string{fmt.Sprintf("PGUSER%d", i): "username"}})
			}
			i := 0
			for b.Loop() {
				i++
				id := fmt.Sprintf("bench-%d-%d", n, i)
				spec := JobSpec{JobID: id, Policies: []string{testenv.JobPolicy}, TokenRole: testenv.JobTokenRole,
					TTL: time.Hour, MaxTTL: time.Hour, Secrets: secs, UID: 4242, GID: 4242, HostDir: filepath.Join(root, id)}
				g, err := c.Issue(context.Background(), spec, &jobstate.MemRecorder{})
				if err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := g.Revoke(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

// renewalsPerHour plays Watch's schedule (renewInterval with its jitter, the
// MaxTTL cap, the capped stop) for a job of length wall and returns the
// number of renewal requests for the token and for one lease.
func renewalsPerHour(ttl, maxTTL, leaseTTL, wall time.Duration) (token, lease int) {
	for t, cur := time.Duration(0), ttl; ; {
		t += renewInterval(cur)
		if t >= wall {
			break
		}
		inc := min(ttl, maxTTL-t).Truncate(time.Second)
		if inc < time.Second {
			break
		}
		token++
		if inc+time.Second < ttl {
			break // capped
		}
		cur = inc
	}
	for t := renewInterval(leaseTTL); t < wall; t += renewInterval(leaseTTL) {
		lease++
	}
	return token, lease
}

// BenchmarkRenewalTraffic reports renewal requests per hour of a 1-hour job
// (MaxTTL 1h) for a few token TTLs, with one database lease of TTL 1h and
// one of TTL 5m, computed from the schedule Watch follows.
func BenchmarkRenewalTraffic(b *testing.B) {
	for _, ttl := range []time.Duration{5 * time.Minute, 15 * time.Minute, time.Hour} {
		for _, lt := range []time.Duration{5 * time.Minute, time.Hour} {
			b.Run(fmt.Sprintf("token=%s/lease=%s", ttl, lt), func(b *testing.B) {
				var tok, lea int
				runs := 0
				for b.Loop() {
					t, l := renewalsPerHour(ttl, time.Hour, lt, time.Hour)
					tok += t
					lea += l
					runs++
				}
				b.ReportMetric(float64(tok)/float64(runs), "token-renewals/h")
				b.ReportMetric(float64(lea)/float64(runs), "lease-renewals/h")
				b.ReportMetric(float64(tok+lea)/float64(runs), "requests/h")
			})
		}
	}
}
