package secrets

import (
	"context"
	"fmt"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// EventKind says what happened to a renewal.
type EventKind string

const (
	// Renewed: the token or lease got a new TTL.
	Renewed EventKind = "renewed"
	// Retrying: a renewal failed transiently; it is retried with backoff.
	Retrying EventKind = "retrying"
	// Failed: renewal gave up (permission denied, lease or token gone, or the
	// TTL ran out while retrying). Stop says whether the job must end.
	Failed EventKind = "failed"
	// Capped: the token or lease reached its max TTL; it is no longer renewed
	// and expires at Expires (the job's wall time bounds the token's).
	Capped EventKind = "capped"
)

// Event is one renewal result. It never carries a secret value.
type Event struct {
	Time time.Time
	Kind EventKind
	// What is "token" for the job token, or the secret path of a lease.
	What    string
	LeaseID string // empty for the token
	TTL     time.Duration
	Expires time.Time
	Err     error
	// Stop is true when Kind is Failed and the profile says stop.
	Stop bool
}

func (e Event) String() string {
	s := fmt.Sprintf("secrets: %s %s (ttl %s)", e.What, e.Kind, e.TTL)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Violation returns the event as a typed violation for the supervisor, the
// audit log and the metrics (meaningful for Failed events).
func (e Event) Violation(job string) violation.Violation {
	act := violation.Recorded
	if e.Stop {
		act = violation.Killed
	}
	detail := fmt.Sprintf("renewal of %s failed", e.What)
	if e.Err != nil {
		detail += ": " + e.Err.Error()
	}
	return violation.Violation{Kind: violation.Secrets, Job: job, Time: e.Time, Action: act, Detail: detail}
}

// item is one thing Watch renews.
type item struct {
	what    string
	leaseID string // "" for the token
	ttl     time.Duration
	expires time.Time
	next    time.Time
	fails   int
	done    bool
}

// Watch starts renewing the job token and its renewable leases at about a
// third of each TTL (with jitter, backing off on errors) and reports every
// result on the returned channel. The channel closes when ctx ends, the
// grant is revoked, or nothing is left to renew. Calling Watch again returns
// the same channel.
func (g *Grant) Watch(ctx context.Context) <-chan Event {
	g.watchOnce.Do(func() {
		g.events = make(chan Event, 16)
		g.revokeMu.Lock()
		revoked := g.revoked
		g.revokeMu.Unlock()
		if revoked {
			close(g.events)
			return
		}
		wctx, cancel := context.WithCancel(ctx)
		g.stopWatch = cancel
		g.watchDone = make(chan struct{})
		now := time.Now()
		items := []*item{{what: "token", ttl: g.spec.TTL, expires: now.Add(g.spec.TTL)}}
		for _, l := range g.leases {
			if l.renewable && l.ttl > 0 {
				items = append(items, &item{what: l.path, leaseID: l.id, ttl: l.ttl, expires: now.Add(l.ttl)})
			}
		}
		for _, it := range items {
			it.next = now.Add(renewInterval(it.ttl))
		}
		go g.watch(wctx, items)
	})
	return g.events
}

func (g *Grant) watch(ctx context.Context, items []*item) {
	defer close(g.watchDone)
	defer close(g.events)
	for {
		var nx *item
		for _, it := range items {
			if !it.done && (nx == nil || it.next.Before(nx.next)) {
				nx = it
			}
		}
		if nx == nil {
			return
		}
		t := time.NewTimer(time.Until(nx.next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ev := g.renewOne(ctx, nx)
		if ctx.Err() != nil {
			return
		}
		if ev.Kind == Failed || ev.Kind == Retrying {
			g.log.Warn("secrets renewal", "what", ev.What, "lease_id", ev.LeaseID, "kind", ev.Kind, "stop", ev.Stop, "err", ev.Err)
		} else {
			g.log.Info("secrets renewal", "what", ev.What, "lease_id", ev.LeaseID, "kind", ev.Kind, "ttl", ev.TTL)
		}
		select {
		case g.events <- ev:
		case <-ctx.Done():
			return
		}
	}
}

// renewOne renews it once and schedules its next renewal.
func (g *Grant) renewOne(ctx context.Context, it *item) Event {
	now := time.Now()
	ev := Event{Time: now, What: it.what, LeaseID: it.leaseID}
	var got time.Duration
	var err error
	inc := int(it.ttl.Seconds())
	if it.leaseID == "" {
		if left := int(g.maxExpiry.Sub(now).Seconds()); left < inc {
			inc = left
		}
		if inc < 1 {
			it.done = true
			ev.Kind, ev.Expires = Capped, it.expires
			return ev
		}
		s, e := g.job.Auth().Token().RenewSelfWithContext(ctx, inc)
		err = e
		if e == nil && s != nil && s.Auth != nil {
			got = time.Duration(s.Auth.LeaseDuration) * time.Second
		}
	} else {
		s, e := g.job.Sys().RenewWithContext(ctx, it.leaseID, inc)
		err = e
		if e == nil && s != nil {
			got = time.Duration(s.LeaseDuration) * time.Second
		}
	}
	if err != nil {
		code := httpStatus(err)
		permanent := code >= 400 && code < 500 // denied, token or lease gone, not renewable
		err = vaultErr(err)
		it.fails++
		wait := backoff(it.fails)
		if permanent || now.Add(wait).After(it.expires) {
			it.done = true
			ev.Kind, ev.Err, ev.Expires = Failed, err, it.expires
			ev.Stop = g.spec.OnRenewFailure == OnFailureStop
			return ev
		}
		it.next = now.Add(wait)
		ev.Kind, ev.Err, ev.Expires = Retrying, err, it.expires
		return ev
	}
	it.fails = 0
	it.expires = now.Add(got)
	ev.TTL, ev.Expires = got, it.expires
	if got+time.Second < it.ttl {
		it.done = true // cut short by its max TTL: renewing again gains nothing
		ev.Kind = Capped
		return ev
	}
	it.next = now.Add(renewInterval(got))
	ev.Kind = Renewed
	return ev
}
