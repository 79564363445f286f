package launcher

import (
	"context"

	"github.com/securetrain/securetrain/sandbox"
)

// integrityPlan is what the integrity steps carry from prepare to the end of
// the job: verified inputs and their mounts.
type integrityPlan struct {
	mounts []sandbox.Mount
}

// prepareInputs verifies the profile's pinned inputs (and scans model files)
// before anything is created. Hook: filled in by the integrity wiring.
func (l *Launcher) prepareInputs(ctx context.Context, pl *plan) error { return nil }

// recheckMountedInputs runs after the inputs are bound into the bundle and
// before the job starts. Hook: filled in by the integrity wiring.
func (l *Launcher) recheckMountedInputs(ctx context.Context, pl *plan) error { return nil }

// finishInputs rechecks inputs at the end of the run and writes the signed
// provenance of the run. Hook: filled in by the integrity wiring.
func (l *Launcher) finishInputs(ctx context.Context, pl *plan, res *Result) error { return nil }
