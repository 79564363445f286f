package sandbox

import (
	"slices"
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
	} {
		if got := subcommand(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("subcommand(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
