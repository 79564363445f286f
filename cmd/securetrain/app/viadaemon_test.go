package app

import (
	"flag"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// recordingFlags reads flags from c and records each name asked for.
type recordingFlags struct {
	c    *cli.Context
	read []string
}

func (r *recordingFlags) note(name string) string { r.read = append(r.read, name); return name }
func (r *recordingFlags) String(n string) string  { return r.c.String(r.note(n)) }
func (r *recordingFlags) StringSlice(n string) []string {
	return r.c.StringSlice(r.note(n))
}
func (r *recordingFlags) Bool(n string) bool       { return r.c.Bool(r.note(n)) }
func (r *recordingFlags) Float64(n string) float64 { return r.c.Float64(r.note(n)) }
func (r *recordingFlags) Int64(n string) int64     { return r.c.Int64(r.note(n)) }
func (r *recordingFlags) Duration(n string) time.Duration {
	return r.c.Duration(r.note(n))
}

// TestDaemonRunArgsReadRunFlags: every flag the daemon client sends is one
// `securetrain run` defines, so a root caller and a caller of the daemon
// have the same flags (a name run lacks would always read as empty).
func TestDaemonRunArgsReadRunFlags(t *testing.T) {
	set := flag.NewFlagSet("run", flag.ContinueOnError)
	for _, f := range RunCommand.Flags {
		if err := f.Apply(set); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Parse([]string{"--tty", "never", "--", "true"}); err != nil {
		t.Fatal(err)
	}
	r := &recordingFlags{c: cli.NewContext(cli.NewApp(), set, nil)}
	if _, err := daemonRunArgs(r, set.Args(), "/work"); err != nil {
		t.Fatal(err)
	}
	if len(r.read) == 0 {
		t.Fatal("daemonRunArgs read no flags")
	}
	for _, n := range r.read {
		if set.Lookup(n) == nil {
			t.Errorf("the daemon client reads --%s, which securetrain run does not define", n)
		}
	}
}
