package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/securetrain/securetrain/audit"
)

// What one refusal records of the caller's request: anyone on the host may
// send requests, policy or no policy, so the record must not let them fill
// the audit log's disk. A refused run records at most refusalArgs
// arguments of at most refusalArg bytes each, then a marker with the
// whole command's size and digest; a reason or profile at most refusalText
// bytes.
const (
	refusalArgs = 16
	refusalArg  = 256
	refusalText = 512
)

// How often refusals are recorded one by one: each uid gets refusalBurst
// lines at once and one more every refusalEvery; past that its refusals are
// counted, and every refusalSummaryEvery (and when the daemon stops) one
// refused_summary event per uid records how many, of which operations, and
// the last reason. A flooding uid thus writes at most about 2 KiB per
// refusalEvery plus one summary line per refusalSummaryEvery.
const (
	refusalBurst        = 10
	refusalEvery        = 30 * time.Second
	refusalSummaryEvery = time.Minute
)

// clip bounds s to n bytes (on a rune boundary), marking what was cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return strings.ToValidUTF8(s[:i], "?") + fmt.Sprintf("…[%d bytes cut]", len(s)-i)
}

// boundedCommand is what a refusal records of argv: the command itself when
// it is small, else its first arguments clipped, and a last element that
// says what was cut, with the whole command's size and SHA-256 (of its JSON
// encoding) so that a copy found elsewhere can be matched.
func boundedCommand(argv []string) []string {
	total := 0
	for _, a := range argv {
		total += len(a)
	}
	out := make([]string, 0, min(len(argv), refusalArgs)+1)
	cut := len(argv) > refusalArgs
	for i, a := range argv {
		if i == refusalArgs {
			break
		}
		if len(a) > refusalArg {
			cut = true
			a = clip(a, refusalArg)
		}
		out = append(out, a)
	}
	if !cut {
		return out
	}
	b, _ := json.Marshal(argv)
	sum := sha256.Sum256(b)
	return append(out, fmt.Sprintf("…[command cut: %d arguments, %d bytes, sha256:%s]", len(argv), total, hex.EncodeToString(sum[:])))
}

// refusalLimiter is a token bucket per uid for recording refusals, which
// counts what it does not let through.
type refusalLimiter struct {
	mu    sync.Mutex
	now   func() time.Time
	burst float64
	every time.Duration
	users map[int]*refusalBucket
}

type refusalBucket struct {
	user        string
	tokens      float64
	refilled    time.Time
	held        map[string]int // op -> refusals not recorded one by one
	first, last time.Time
	lastReason  string
}

func newRefusalLimiter(now func() time.Time) *refusalLimiter {
	return &refusalLimiter{now: now, burst: refusalBurst, every: refusalEvery, users: map[int]*refusalBucket{}}
}

// allow reports whether uid's refusal may be recorded on its own line; if
// not, it is counted for the next summary.
func (l *refusalLimiter) allow(uid int, user, op, reason string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b := l.users[uid]
	if b == nil {
		b = &refusalBucket{tokens: l.burst, refilled: now}
		l.users[uid] = b
	}
	b.user = user
	if el := now.Sub(b.refilled); el > 0 {
		b.tokens = min(l.burst, b.tokens+float64(el)/float64(l.every))
		b.refilled = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	if b.held == nil {
		b.held = map[string]int{}
		b.first = now
	}
	b.held[op]++
	b.last, b.lastReason = now, clip(reason, refusalText)
	return false
}

// refusalSummary is one uid's refusals that were counted, not recorded.
type refusalSummary struct {
	UID         int
	User        string
	Ops         map[string]int
	First, Last time.Time
	LastReason  string
}

func (s refusalSummary) count() int {
	n := 0
	for _, c := range s.Ops {
		n += c
	}
	return n
}

// drain returns the counted refusals of every uid (in uid order) and starts
// counting afresh; uids whose bucket is full again are forgotten.
func (l *refusalLimiter) drain() []refusalSummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []refusalSummary
	now := l.now()
	for uid, b := range l.users {
		if b.held != nil {
			out = append(out, refusalSummary{UID: uid, User: b.user, Ops: b.held, First: b.first, Last: b.last, LastReason: b.lastReason})
			b.held = nil
		} else if b.tokens+float64(now.Sub(b.refilled))/float64(l.every) >= l.burst {
			delete(l.users, uid)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UID < out[j].UID })
	return out
}

// refused records one refused request: on its own line (a run's in the
// audit log as well) while the caller's uid is within its rate, else
// counted for the next summary.
func (s *Server) refused(ctx context.Context, id Identity, req *Request, reason string, log *slog.Logger) {
	if !s.refusals.allow(id.UID, id.Name, req.Op, reason) {
		return
	}
	log.Info("refused", "reason", clip(reason, refusalText))
	if req.Op != OpRun {
		return
	}
	// A refused run is no job, so the launcher records nothing: the
	// security team still learns who tried what.
	f := map[string]any{"uid": id.UID, "reason": clip(reason, refusalText)}
	if req.Run != nil {
		f["command"], f["profile"] = boundedCommand(req.Run.Command), clip(req.Run.Profile, refusalText)
	}
	s.audit(ctx, "", id.Name, audit.Custom{Type: "refused", Fields: f})
}

// summarizeRefusals writes one refused_summary event per uid whose
// refusals were counted since the last one.
func (s *Server) summarizeRefusals(ctx context.Context) {
	for _, r := range s.refusals.drain() {
		n := r.count()
		s.Log.Warn("refusals over the rate, counted", "user", r.User, "uid", r.UID, "count", n, "ops", r.Ops, "last_reason", r.LastReason)
		s.audit(ctx, "", r.User, audit.Custom{Type: "refused_summary", Fields: map[string]any{
			"uid": r.UID, "count": n, "ops": r.Ops, "first": r.First.UTC(), "last": r.Last.UTC(), "last_reason": r.LastReason,
		}})
	}
}

// summarizeRefusalsEvery runs summarizeRefusals every interval until ctx
// ends (Serve writes the last summary after its handlers are done).
func (s *Server) summarizeRefusalsEvery(ctx context.Context, every time.Duration) {
	everyTick(ctx, every, s.summarizeRefusals)
}

// everyTick calls f every interval until ctx ends.
func everyTick(ctx context.Context, every time.Duration, f func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f(ctx)
		}
	}
}
