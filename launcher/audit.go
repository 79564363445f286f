package launcher

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/securetrain/securetrain/audit"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/sandbox"
)

// auditStart opens the audit log and records what the job runs, with what
// and under which policy. The job does not start if this cannot be written.
func (j *job) auditStart(ctx context.Context) error {
	lg, err := j.l.OpenAudit(ctx)
	if err != nil {
		return err
	}
	j.audit = lg
	j.undo.push(func() error { return lg.Close(context.Background()) })
	if _, err := lg.Append(ctx, j.id, j.pl.user.Name, j.startEvent()); err != nil {
		return fmt.Errorf("audit log: %w", err)
	}
	if j.grant == nil {
		return nil
	}
	for _, s := range j.pl.prof.Secrets {
		if _, err := lg.Append(ctx, j.id, j.pl.user.Name, audit.SecretIssued{
			Path: s.Path, Accessor: j.grant.Accessor(), TTLSeconds: int64(j.pl.prof.Vault.TTL.D() / time.Second),
			Delivery: strings.Join(sortedValues(s.Files), ","),
		}); err != nil {
			return fmt.Errorf("audit log: %w", err)
		}
	}
	return nil
}

// startEvent is the audit record of the job's start.
func (j *job) startEvent() audit.JobStart {
	pl := j.pl
	ev := audit.JobStart{
		Command: pl.req.Command, Workdir: pl.codeDir, UID: int(pl.user.UID), GID: int(pl.user.GID),
		Profile: pl.prof.Source, ProfileHash: pl.prof.Digest, Runtime: "runsc",
	}
	for _, m := range j.mounts {
		if m.Kind == sandbox.Bind && !isSystemMount(m.Target) {
			ev.Mounts = append(ev.Mounts, audit.Mount{Source: m.Source, Dest: m.Target, ReadOnly: m.ReadOnly})
		}
	}
	if pl.net != nil {
		for _, r := range pl.net.Allow {
			ev.Allowlist = append(ev.Allowlist, r.String())
		}
		if pl.req.Learn {
			ev.Allowlist = append(ev.Allowlist, "(learn: audit mode, everything allowed)")
		}
	}
	for _, g := range pl.gpus {
		ev.GPUs = append(ev.GPUs, fmt.Sprint(g))
	}
	for _, vi := range pl.integrity.inputs {
		if s := vi.Signature; s != nil {
			ev.Models = append(ev.Models, audit.ModelSignature{Input: vi.Name, Path: vi.Path, Bundle: s.Bundle, Method: s.Method, Signer: s.Signer, RootDigest: s.RootDigest})
		}
	}
	return ev
}

// auditEnd records the violations, the kill if the launcher stopped the
// job, and the exit with the usage record. Errors are returned for the
// caller to report; the job has ended either way.
func (j *job) auditEnd(ctx context.Context) error {
	lg, res := j.audit, j.res
	var errs []string
	app := func(p audit.Payload) {
		if _, err := lg.Append(ctx, res.ID, res.User, p); err != nil {
			errs = append(errs, err.Error())
		}
	}
	for _, v := range res.Violations {
		app(audit.Violation{Violation: v})
	}
	if res.killedByUs {
		k := audit.Kill{Signal: "SIGTERM", Reason: res.Outcome}
		if res.JobStatus == 128+9 {
			k.Signal = "SIGKILL"
		}
		if len(res.Violations) > 0 {
			k.Violation = res.Violations[0].Kind
		}
		app(k)
	}
	var usageJSON json.RawMessage
	if res.Usage != nil {
		usageJSON, _ = json.Marshal(res.Usage)
	}
	ex := audit.Exit{Code: res.ExitCode, Outcome: res.Outcome, DurationSeconds: res.WallSeconds, Usage: usageJSON}
	if res.JobStatus > 128 && res.JobStatus < 128+65 && res.Usage != nil {
		ex.Signal = res.Usage.Exit.Signal
	}
	app(ex)
	if len(errs) > 0 {
		return fmt.Errorf("audit log: %s", strings.Join(errs, "; "))
	}
	return nil
}

// auditGC records what gc removed for one job.
func (l *Launcher) auditGC(ctx context.Context, job string, removed []jobstate.Resource, errs []error) {
	lg, err := l.OpenAudit(ctx)
	if err != nil {
		l.Log.Warn("gc: audit log", "err", err)
		return
	}
	defer lg.Close(ctx)
	ev := audit.GC{Removed: removed}
	for _, e := range errs {
		ev.Errors = append(ev.Errors, e.Error())
	}
	if _, err := lg.Append(ctx, job, "", ev); err != nil {
		l.Log.Warn("gc: audit log", "err", err)
	}
}

func isSystemMount(target string) bool {
	return hostVisible(target) || target == "/etc" || strings.HasPrefix(target, "/etc/")
}

func sortedValues(m map[string]string) []string {
	var out []string
	for _, k := range sortedKeysOf(m) {
		out = append(out, m[k])
	}
	return out
}

func sortedKeysOf(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
