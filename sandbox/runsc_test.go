package sandbox

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestRunArgs(t *testing.T) {
	secure := []string{"--net-raw=false", "--host-uds=none", "--host-fifo=none", "--allow-packet-socket-write=false"}
	for _, tc := range []struct {
		name string
		r    Runsc
		o    RunOptions
		want []string // in order
		not  []string // prefixes that must not appear
	}{
		{"no network", Runsc{Path: "/runsc", Root: "/run/securetrain/runsc"}, RunOptions{OverlaySize: 4 << 30},
			[]string{"--root", "/run/securetrain/runsc", "--platform=systrap", "--network=none", "--net-raw=false", "--host-uds=none", "--host-fifo=none", "--allow-packet-socket-write=false", "--overlay2=root:memory,size=4294967296", "run", "--bundle", "/b", "job1"},
			[]string{"--nvproxy", "--console-socket", "--debug"}},
		{"netns", Runsc{Root: "/r", Platform: "kvm"}, RunOptions{Network: true},
			[]string{"--root", "/r", "--platform=kvm", "--network=sandbox", "--net-raw=false", "--host-uds=none", "--host-fifo=none", "--allow-packet-socket-write=false", "--overlay2=root:memory", "run", "--bundle", "/b", "job1"},
			[]string{"--nvproxy"}},
		{"gpu tty debug", Runsc{Root: "/r", DebugLogDir: "/var/log/st"}, RunOptions{GPUCaps: []string{"compute", "utility"}, ConsoleSocket: "/s/console.sock", OverlaySize: 1 << 20},
			[]string{"--root", "/r", "--debug", "--debug-log", "/var/log/st/", "--platform=systrap", "--network=none", "--net-raw=false", "--host-uds=none", "--host-fifo=none", "--allow-packet-socket-write=false", "--overlay2=root:memory,size=1048576", "--nvproxy-allowed-driver-capabilities=compute,utility", "run", "--bundle", "/b", "--console-socket", "/s/console.sock", "job1"},
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.r.RunArgs("job1", "/b", tc.o)
			if !slices.Equal(got, tc.want) {
				t.Errorf("RunArgs\n got %q\nwant %q", got, tc.want)
			}
			for _, s := range secure {
				if !slices.Contains(got, s) {
					t.Errorf("missing %s", s)
				}
			}
			for _, n := range tc.not {
				for _, a := range got {
					if strings.HasPrefix(a, n) {
						t.Errorf("unexpected %s", a)
					}
				}
			}
			// Global flags come before the subcommand, the id last.
			run := slices.Index(got, "run")
			for _, s := range secure {
				if i := slices.Index(got, s); i > run {
					t.Errorf("%s after the run subcommand", s)
				}
			}
			if got[len(got)-1] != "job1" {
				t.Errorf("id not last: %q", got)
			}
			// nvproxy only with GPU capabilities.
			hasNV := slices.ContainsFunc(got, func(a string) bool { return a == "--nvproxy=true" || strings.HasPrefix(a, "--nvproxy-allowed") })
			if hasNV != (len(tc.o.GPUCaps) > 0) {
				t.Errorf("nvproxy flags %v with GPUCaps %v", hasNV, tc.o.GPUCaps)
			}
		})
	}
}

func TestSubcommand(t *testing.T) {
	for _, tc := range []struct{ in, want []string }{
		{[]string{"--root", "/r", "delete", "--force", "x"}, []string{"delete", "--force", "x"}},
		{[]string{"--root", "/r", "--debug", "kill", "x", "KILL"}, []string{"kill", "x", "KILL"}},
		{[]string{"nvproxy", "list-supported-drivers"}, []string{"nvproxy", "list-supported-drivers"}},
		{[]string{"--root", "/r", "--debug", "--debug-log", "/var/log/st/", "delete", "--force", "x"}, []string{"delete", "--force", "x"}},
	} {
		if got := subcommand(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("subcommand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// scriptRunsc is a runsc that prints out on stdout, err on stderr and exits
// with code.
func scriptRunsc(t *testing.T, out, errOut string, code int) *Runsc {
	t.Helper()
	dir := t.TempDir()
	bin := dir + "/runsc"
	script := "#!/bin/sh\ncat <<'EOF1'\n" + out + "\nEOF1\ncat >&2 <<'EOF2'\n" + errOut + "\nEOF2\nexit " + strconv.Itoa(code) + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return &Runsc{Path: bin, Root: dir + "/root"}
}

func TestRunscCalls(t *testing.T) {
	ctx := context.Background()

	r := scriptRunsc(t, `{"ociVersion":"1.0.0","id":"j1","pid":4242,"status":"running","bundle":"/b","created":"2026-01-01T00:00:00Z"}`, "", 0)
	st, err := r.State(ctx, "j1")
	if err != nil || st.ID != "j1" || st.Pid != 4242 || st.Status != "running" || st.Bundle != "/b" {
		t.Errorf("State = %+v, %v", st, err)
	}

	r = scriptRunsc(t, `[{"id":"a","status":"running"},{"id":"b","status":"stopped"}]`, "", 0)
	ss, err := r.List(ctx)
	if err != nil || len(ss) != 2 || ss[0].ID != "a" || ss[1].Status != "stopped" {
		t.Errorf("List = %+v, %v", ss, err)
	}
	for _, empty := range []string{"", "null"} {
		r = scriptRunsc(t, empty, "", 0)
		if ss, err := r.List(ctx); err != nil || ss != nil {
			t.Errorf("List of %q = %+v, %v", empty, ss, err)
		}
	}

	r = scriptRunsc(t, "runsc version release-20260901.0\nspec: 1.1.0", "", 0)
	if v, err := r.Version(ctx); err != nil || v != "runsc version release-20260901.0" {
		t.Errorf("Version = %q, %v", v, err)
	}

	r = scriptRunsc(t, "535.104.05\n570.172.08\n580.159.04", "", 0)
	if d, err := r.SupportedDrivers(ctx); err != nil || !slices.Equal(d, []string{"535.104.05", "570.172.08", "580.159.04"}) {
		t.Errorf("SupportedDrivers = %q, %v", d, err)
	}

	// A container runsc does not know: Delete is done, the rest say so.
	r = scriptRunsc(t, "", `loading container "j9": file does not exist`, 128)
	if err := r.Delete(ctx, "j9"); err != nil {
		t.Errorf("Delete of an unknown container: %v", err)
	}
	if _, err := r.State(ctx, "j9"); !errors.Is(err, ErrNotFound) {
		t.Errorf("State of an unknown container: %v, want ErrNotFound", err)
	}
	if err := r.Kill(ctx, "j9", "TERM", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("Kill of an unknown container: %v, want ErrNotFound", err)
	}

	// Other failures: one line, the subcommand and runsc's last line.
	r = scriptRunsc(t, "", "W1125 debug noise\nerror: sandbox is busy", 1)
	os.MkdirAll(r.Root, 0o700)
	os.WriteFile(r.Root+"/j1_sandbox:j1.state", nil, 0o600)
	err = r.Delete(ctx, "j1")
	if err == nil || err.Error() != "runsc delete --force j1: error: sandbox is busy" {
		t.Errorf("Delete failure = %v", err)
	}
	r = scriptRunsc(t, "", "", 3)
	if _, err := r.Version(ctx); err == nil || err.Error() != "runsc --version: exit status 3" {
		t.Errorf("silent failure = %v", err)
	}
}

// Delete asks runsc only when runsc's root holds something of the
// container: after `runsc run` removed it, no runsc process is started.
func TestRunscDeleteOnlyWhatRunscKnows(t *testing.T) {
	ctx := context.Background()
	r := scriptRunsc(t, "", "error: should not have been asked", 1)
	if err := os.MkdirAll(r.Root, 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(r.Root+"/null-netns", nil, 0o400)
	os.WriteFile(r.Root+"/other_sandbox:other.state", nil, 0o600)
	if err := r.Delete(ctx, "j1"); err != nil {
		t.Errorf("Delete with no state of j1 started runsc: %v", err)
	}
	for _, name := range []string{"j1_sandbox:j1.state", "j1_sandbox:j1.lock", "runsc-j1.sock", "pod_sandbox:j1.state"} {
		p := r.Root + "/" + name
		os.WriteFile(p, nil, 0o600)
		if err := r.Delete(ctx, "j1"); err == nil || !strings.Contains(err.Error(), "should not have been asked") {
			t.Errorf("with %s, Delete = %v; want runsc asked", name, err)
		}
		os.Remove(p)
	}
}
