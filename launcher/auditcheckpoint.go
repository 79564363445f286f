package launcher

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/securetrain/securetrain/audit"
	"github.com/securetrain/securetrain/signing"
)

// journalSink is this process's one connection to the journal for
// checkpoints (every audit.Log it opens shares it).
var (
	journalOnce sync.Once
	journalSink *audit.JournalSink
)

// AuditOptions returns the options every audit.Log this launcher (its jobs,
// gc, the daemon, the Slurm epilog) opens: with the host's audit.checkpoints
// set, a SignedCheckpointer that signs the chain head with the host's
// integrity key (file or Vault transit) after every audit.checkpoint_every
// appends and at each Close, and appends it to the checkpoints file (and to
// the journal where one runs). A signer that cannot be loaded is an error:
// no job starts with an audit log that cannot be checkpointed.
func (l *Launcher) AuditOptions(ctx context.Context) (audit.Options, error) {
	opts := audit.Options{Logger: l.Log}
	h := l.Host
	if h.Audit.Checkpoints == "" {
		return opts, nil
	}
	var signer signing.Signer
	switch {
	case h.Integrity.SigningKey != "":
		s, err := signing.LoadPrivateKeyFile(h.Integrity.SigningKey)
		if err != nil {
			return opts, fmt.Errorf("audit.checkpoints: host integrity.signing_key: %w", err)
		}
		signer = s
	case h.Integrity.TransitKey != "":
		c, err := l.vaultClient()
		if err != nil {
			return opts, fmt.Errorf("audit.checkpoints: host integrity.transit_key %s: %w", h.Integrity.TransitKey, err)
		}
		s, err := signing.NewTransitSigner(ctx, c, h.Integrity.TransitMount, h.Integrity.TransitKey, 0)
		if err != nil {
			return opts, fmt.Errorf("audit.checkpoints: host integrity.transit_key %s: %w", h.Integrity.TransitKey, err)
		}
		signer = s
	default:
		return opts, fmt.Errorf("audit.checkpoints %s: no signer: set integrity.signing_key or integrity.transit_key", h.Audit.Checkpoints)
	}
	sinks := []audit.CheckpointSink{audit.FileSink{Path: h.Audit.Checkpoints}}
	if audit.JournalPresent("") {
		journalOnce.Do(func() { journalSink = &audit.JournalSink{} })
		sinks = append(sinks, journalSink)
	}
	host, _ := os.Hostname()
	opts.Checkpointer = &audit.SignedCheckpointer{LogID: host + ":" + h.Audit.Path, Signer: signer, Sinks: sinks}
	opts.CheckpointEvery = h.Audit.CheckpointEvery
	return opts, nil
}

// OpenAudit opens the host's audit log with AuditOptions. Every launcher,
// the daemon, the Slurm epilog and gc append to the same file; the log
// serialises writers.
func (l *Launcher) OpenAudit(ctx context.Context) (*audit.Log, error) {
	opts, err := l.AuditOptions(ctx)
	if err != nil {
		return nil, err
	}
	lg, err := audit.Open(l.Host.Audit.Path, opts)
	if err != nil {
		return nil, fmt.Errorf("audit log %s: %w", l.Host.Audit.Path, err)
	}
	return lg, nil
}
