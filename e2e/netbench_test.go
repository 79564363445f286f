package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Network benchmarks (go test -run '^$' -bench Network -benchtime 20x ./e2e).

var stampRE = regexp.MustCompile(`stamp:(\d+)`)

// BenchmarkNetworkViolationToKill: the job makes a socket, prints a
// timestamp and at once connects to the evil server (no name lookup in
// between: the stamp is as close to the first forbidden packet as the job
// can put it, the print's own cost included). Measured from that timestamp
// to the sandbox process (runsc-sandbox, found by the job's ID) being dead,
// watched through a pidfd, and to securetrain itself having exited
// (teardown included). At least 20 runs; p50/p99 reported.
func BenchmarkNetworkViolationToKill(b *testing.B) {
	e := benchSetup(b)
	n := newNetEnv(b, e)
	dir := benchProject(b, e)
	if err := os.WriteFile(filepath.Join(dir, "net.py"), []byte(netScript), 0o644); err != nil {
		b.Fatal(err)
	}
	evil := n.w.EvilIP.String()
	var dead, exited []float64
	runs := max(b.N, 20)
	b.ResetTimer()
	for i := 0; i < runs; i++ {
		d, x := n.violationRun(b, dir, evil)
		dead, exited = append(dead, d), append(exited, x)
	}
	b.StopTimer()
	slices.Sort(dead)
	slices.Sort(exited)
	b.ReportMetric(dead[len(dead)/2], "dead-p50-ms")
	b.ReportMetric(dead[len(dead)*99/100], "dead-p99-ms")
	b.ReportMetric(exited[len(exited)/2], "exit-p50-ms")
	b.ReportMetric(exited[len(exited)*99/100], "exit-p99-ms")
}

// violationRun runs one job to its violation; it returns the milliseconds
// from the job's timestamp to the sandbox's death and to securetrain's exit.
func (n *netEnv) violationRun(b *testing.B, dir, evil string) (dead, exited float64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := n.cmd(ctx, dir, nil, "run", "--user", jobUser, "--allow", "allowed.test:8080", "--",
		"/usr/bin/python3", "-I", "net.py", "wait", "probe", evil, "8080", "sleep", "60")
	rd, wr, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	defer wr.Close()
	out := &syncBuffer{}
	var errb bytes.Buffer
	c.Stdin, c.Stdout, c.Stderr = rd, out, &errb
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	rd.Close()
	waitCh := make(chan struct{})
	go func() { c.Wait(); close(waitCh) }()
	waitFor(b, out, "waiting")
	pid, err := sandboxPid()
	if err != nil {
		b.Fatal(err)
	}
	pfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(pfd)
	wr.Write([]byte("go\n"))
	fds := []unix.PollFd{{Fd: int32(pfd), Events: unix.POLLIN}}
	for {
		if _, err := unix.Poll(fds, 60_000); err == nil || !errors.Is(err, unix.EINTR) {
			break
		}
	}
	tDead := time.Now()
	<-waitCh
	tExit := time.Now()
	m := stampRE.FindStringSubmatch(out.String())
	if m == nil || c.ProcessState.ExitCode() != 123 {
		b.Fatalf("want a stamp and exit 123, got exit %d\n%s\n%s", c.ProcessState.ExitCode(), out, errb.String())
	}
	ns, _ := strconv.ParseInt(m[1], 10, 64)
	t0 := time.Unix(0, ns)
	if os.Getenv("NETBENCH_LOG") != "" {
		b.Logf("t0 %s dead +%s exit +%s\n%s", t0.UTC().Format("15:04:05.000000"), tDead.Sub(t0), tExit.Sub(t0), errb.String())
	}
	return float64(tDead.Sub(t0).Microseconds()) / 1000, float64(tExit.Sub(t0).Microseconds()) / 1000
}

// sandboxPid finds the one runsc-sandbox process under this suite's runsc root.
func sandboxPid() (int, error) {
	ents, _ := os.ReadDir(filepath.Join(stateDir, "jobs"))
	if len(ents) != 1 {
		return 0, fmt.Errorf("want one job in %s, found %d", stateDir, len(ents))
	}
	id := ents[0].Name()
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) > 2 && args[0] == "runsc-sandbox" && slices.Contains(args, "boot") && args[len(args)-1] == id &&
			slices.Contains(args, "--root="+filepath.Join(stateDir, "runsc")) {
			return strconv.Atoi(filepath.Base(filepath.Dir(p)))
		}
	}
	return 0, fmt.Errorf("no runsc-sandbox process for job %s", id)
}

// BenchmarkNetworkLaunch: the launch time netguard adds (setup and
// teardown): securetrain run --allow X -- /bin/true against --network none,
// interleaved.
func BenchmarkNetworkLaunch(b *testing.B) {
	e := benchSetup(b)
	n := newNetEnv(b, e)
	dir := benchProject(b, e)
	var off, on []float64
	runs := max(b.N, 10)
	b.ResetTimer()
	for i := 0; i < runs; i++ {
		for _, c := range []struct {
			flags []string
			to    *[]float64
		}{{[]string{"--network", "none"}, &off}, {[]string{"--allow", "allowed.test:8080"}, &on}} {
			args := append(append([]string{"run", "--user", jobUser}, c.flags...), "--", "/bin/true")
			cmd := n.cmd(b.Context(), dir, nil, args...)
			t0 := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %v\n%s", args, err, out)
			}
			*c.to = append(*c.to, float64(time.Since(t0).Microseconds())/1000)
		}
	}
	b.StopTimer()
	b.ReportMetric(median(off), "none-ms-median")
	b.ReportMetric(median(on), "netguard-ms-median")
	b.ReportMetric(median(on)-median(off), "added-ms")
}
