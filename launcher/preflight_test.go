package launcher

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/testenv"
)

func TestIsStatic(t *testing.T) {
	ok, why := isStatic("/bin/sh")
	if ok || why != "dynamically linked: rebuild with CGO_ENABLED=0 (make runsc)" {
		t.Errorf("/bin/sh: %v %q", ok, why)
	}
	if ok, why := isStatic("/etc/hostname"); ok || why == "" {
		t.Errorf("not an ELF file: %v %q", ok, why)
	}
	if v := runscModuleVersion("/bin/sh"); !strings.HasPrefix(v, "unknown") {
		t.Errorf("C binary has a gVisor version %q", v)
	}
}

// TestPreflightPinnedRunsc checks the real pinned runsc the way `securetrain
// check` does (component test: skipped outside CI when runsc is missing).
func TestPreflightPinnedRunsc(t *testing.T) {
	runsc := testenv.Runsc(t)
	if ok, why := isStatic(runsc); !ok {
		t.Errorf("pinned runsc %s: %s", runsc, why)
	}
	if v := runscModuleVersion(runsc); v != PinnedGVisor {
		t.Errorf("pinned runsc %s is gvisor %s, want %s", runsc, v, PinnedGVisor)
	}
	if testenv.GVisorVersion != PinnedGVisor {
		t.Errorf("testenv pins %s, launcher pins %s", testenv.GVisorVersion, PinnedGVisor)
	}
	l := &Launcher{Runsc: runsc, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	checks := l.Preflight(context.Background())
	var names []string
	for _, c := range checks {
		names = append(names, c.Name)
		if c.Name == "runsc" || c.Name == "runsc static" || c.Name == "runsc version" {
			if !c.OK || !c.Required {
				t.Errorf("check %+v", c)
			}
		}
	}
	for _, want := range []string{"root", "runsc", "runsc static", "runsc version", "cgroups", "network namespaces"} {
		if !slices.Contains(names, want) {
			t.Errorf("no %q check in %q", want, names)
		}
	}
}

func TestPreflightMissingRunsc(t *testing.T) {
	l := &Launcher{Runsc: "/nonexistent/runsc"}
	for _, c := range l.Preflight(context.Background()) {
		if c.Name == "runsc" {
			if c.OK || !c.Required || c.Detail != "/nonexistent/runsc: not found (make runsc)" {
				t.Errorf("check %+v", c)
			}
			return
		}
	}
	t.Error("no runsc check")
}

// TestPreflightNetworkNode: with a node subnet, check names this node and
// what its subnet holds in allocation blocks.
func TestPreflightNetworkNode(t *testing.T) {
	h := &configs.Host{StateDir: t.TempDir(), Network: twoNodes}
	h.Network.AllocationBlock = 8
	l := &Launcher{Runsc: "/nonexistent/runsc", Host: h}
	for _, c := range l.Preflight(context.Background()) {
		if c.Name == "network node" {
			want := `this node is "gpu1" in network.nodes, job subnet 10.213.1.0/24: 8 allocation blocks of 8 address(es) (allocations whose ids are equal modulo 8 cannot share this node)`
			if !c.OK || c.Required || c.Detail != want {
				t.Errorf("check %+v, want detail %q", c, want)
			}
			return
		}
	}
	t.Error("no network node check")
}
