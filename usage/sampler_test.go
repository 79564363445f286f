package usage

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

func TestSamplerCgroupFakeTree(t *testing.T) {
	for _, tc := range []struct {
		root, path string
		version    int
		failcnt    uint64
		pidsMax    uint64
		blockRead  uint64
	}{
		{"testdata/cgroup2", "/securetrain/job1", 2, 7, 2, 1048576 + 1024},
		{"testdata/cgroup1", "/securetrain/job1", 1, 162, 1, 1048576},
		{"testdata/cgroup1", "/securetrain/ticks", 1, 162, 0, 0}, // cpuacct.stat ticks, no blkio, no pids.events
	} {
		t.Run(tc.root+tc.path, func(t *testing.T) {
			s, err := NewSampler(Config{CgroupRoot: tc.root, CgroupPath: tc.path})
			if err != nil {
				t.Fatal(err)
			}
			if v := s.CgroupVersion(); v != tc.version {
				t.Fatalf("version %d, want %d", v, tc.version)
			}
			f, err := s.Final(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if f.CPUUser != 2.5 || f.CPUSystem != 1 || f.CPUSeconds() != 3.5 {
				t.Errorf("cpu user %v system %v, want 2.5 1", f.CPUUser, f.CPUSystem)
			}
			if f.MemUsage != 100<<20 || f.MemPeak != 200<<20 {
				t.Errorf("mem %d peak %d", f.MemUsage, f.MemPeak)
			}
			if !f.OOMKilled() || f.OOMKills != 1 || f.MemFailcnt != tc.failcnt {
				t.Errorf("oom %d failcnt %d", f.OOMKills, f.MemFailcnt)
			}
			if f.PidsMaxHit != tc.pidsMax || f.HostTasks < 22 {
				t.Errorf("pids max hit %d tasks %d", f.PidsMaxHit, f.HostTasks)
			}
			if f.BlockRead != tc.blockRead {
				t.Errorf("block read %d, want %d", f.BlockRead, tc.blockRead)
			}
			if f.GPUs != nil || f.Sandbox != nil {
				t.Errorf("GPUs %v sandbox %v, want absent", f.GPUs, f.Sandbox)
			}
		})
	}
}

func TestSamplerNoCgroup(t *testing.T) {
	for _, root := range []string{"testdata/cgroup1", "testdata/cgroup2"} {
		s, err := NewSampler(Config{CgroupRoot: root, CgroupPath: "/securetrain/gone"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Sample(context.Background()); !errors.Is(err, ErrNoCgroup) || !IsGone(err) {
			t.Errorf("%s: err %v, want ErrNoCgroup", root, err)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{CgroupPath: ""}, {CgroupPath: "securetrain/x"}, {CgroupPath: "/"}, {CgroupPath: "/securetrain/../x"},
		{CgroupPath: "/securetrain/x", Runsc: "/bin/runsc"}, // no ContainerID
	} {
		if _, err := NewSampler(c); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v: err %v, want ErrConfig", c, err)
		}
	}
}

// The line the pinned runsc printed for a python job (see runsc.go).
const runscLine = `{"type":"stats","id":"tx","data":{"cpu":{"usage":{"total":1416375615}},"memory":{"usage":{"limit":0,"usage":64200704,"failcnt":0},"swap":{"limit":0,"failcnt":0},"kernel":{"limit":0,"failcnt":0},"kernelTCP":{"limit":0,"failcnt":0}},"pids":{"current":1},"network_interfaces":[{"Name":"lo","RxBytes":0,"RxPackets":0,"RxErrors":0,"RxDropped":0,"TxBytes":0,"TxPackets":0,"TxErrors":0,"TxDropped":0}]}}` + "\n"

func TestParseRunscStats(t *testing.T) {
	now := time.Unix(100, 0)
	sb, err := parseRunscStats([]byte(runscLine), now)
	if err != nil {
		t.Fatal(err)
	}
	if sb.CPU < 1.416 || sb.CPU > 1.417 || sb.Memory != 64200704 || sb.Pids != 1 || !sb.Time.Equal(now) {
		t.Errorf("got %+v", sb)
	}
	for _, bad := range []string{"", "{", `{"type":"oom","id":"x"}`} {
		if _, err := parseRunscStats([]byte(bad), now); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// Final must not pass a missing OOM counter for "no OOM"; Sample goes on.
func TestFinalPartialIsError(t *testing.T) {
	s, err := NewSampler(Config{CgroupRoot: "testdata/cgroup1", CgroupPath: "/securetrain/broken"})
	if err != nil {
		t.Fatal(err)
	}
	if smp, err := s.Sample(context.Background()); err != nil || smp.MemUsage != 5 {
		t.Errorf("Sample: %v, mem %d", err, smp.MemUsage)
	}
	f, err := s.Final(context.Background())
	if err == nil || IsGone(err) {
		t.Errorf("Final without memory.oom_control: err %v", err)
	}
	if f.MemUsage != 5 {
		t.Errorf("Final lost what it read: %+v", f)
	}
}

// runsc is started once per job, not once per sample, and not before an
// events interval has passed; its newest stats line is in every sample
// after that, and Close stops it.
func TestSamplerOneRunscStream(t *testing.T) {
	dir := t.TempDir()
	calls := dir + "/calls"
	script := "#!/bin/sh\necho \"$@\" >> " + calls + "\n" +
		"while :; do echo '{\"type\":\"stats\",\"id\":\"j1\",\"data\":{\"cpu\":{\"usage\":{\"total\":2000000000}},\"memory\":{\"usage\":{\"usage\":4096}},\"pids\":{\"current\":3}}}'; sleep 1; done\n"
	if err := os.WriteFile(dir+"/runsc", []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := NewSampler(Config{CgroupRoot: "testdata/cgroup2", CgroupPath: "/securetrain/job1", Runsc: dir + "/runsc", RunscRoot: "/r", ContainerID: "j1", EventsInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if smp, _ := s.Sample(ctx); smp.Sandbox != nil {
		t.Errorf("runsc figures %+v before the first interval", smp.Sandbox)
	}
	if _, err := os.Stat(calls); err == nil {
		t.Error("runsc started at the job's start")
	}
	time.Sleep(time.Second)
	var smp Sample
	for i := 0; i < 50 && smp.Sandbox == nil; i++ {
		smp, _ = s.Sample(ctx)
		time.Sleep(20 * time.Millisecond)
	}
	if smp.Sandbox == nil || smp.Sandbox.CPU != 2 || smp.Sandbox.Pids != 3 || smp.Sandbox.Memory != 4096 {
		t.Errorf("sandbox figures %+v", smp.Sandbox)
	}
	b, _ := os.ReadFile(calls)
	if got := strings.TrimSpace(string(b)); got != "--root /r events --interval=1 j1" {
		t.Errorf("runsc calls %q, want one events stream", got)
	}
	s.Close()
	if b2, _ := os.ReadFile(calls); string(b2) != string(b) {
		t.Errorf("runsc started again: %q", b2)
	}
}
