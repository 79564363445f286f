package e2e

import (
	"fmt"
	"os"
	"testing"
)

// The attack suite: every Test func named TestAttack* plays one attacker
// against the built binary (an unprivileged user on the host, a host
// process, a trojaned package inside the job, an unprivileged daemon
// caller, a forged Slurm environment, a poisoned model or input) and
// asserts how much got through. Each case is listed, grouped by attacker,
// in docs/attacks.md. Benign controls (TestAttackControl*) run real
// training beside the attacks and must never be killed.

// attackFigure records the figure an attack case measures (bytes that got
// through, milliseconds alive after a violation, bytes written to the host
// disk, ...) in the test log, in one greppable line per case:
//
//	ATTACK <test name>: <figure>
//
// and, where SECURETRAIN_ATTACK_REPORT names a file, appends the same line
// there, so that `make test` can print every case's figure at the end.
func attackFigure(t testing.TB, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf("ATTACK %s: %s", t.Name(), fmt.Sprintf(format, args...))
	t.Log(line)
	if p := os.Getenv("SECURETRAIN_ATTACK_REPORT"); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Errorf("attack report: %v", err)
			return
		}
		defer f.Close()
		fmt.Fprintln(f, line)
	}
}
