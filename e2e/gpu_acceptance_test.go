package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGPUAcceptanceDryRun runs scripts/gpu-acceptance.sh where there is no
// GPU: its argument checks, the refusals a GPU-less host must give (run
// --gpus, check), runsc's driver list and the results file. The GPU checks
// themselves run with `make gpu-acceptance` on a GPU host.
func TestGPUAcceptanceDryRun(t *testing.T) {
	e := setup(t)
	if _, err := os.Stat("/dev/nvidia0"); err == nil {
		t.Skip("a GPU host: run make gpu-acceptance OUT=DIR instead of the dry run")
	}
	script, err := filepath.Abs("../scripts/gpu-acceptance.sh")
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (int, string) {
		c := exec.Command(script, args...)
		c.Env = append(os.Environ(), "SECURETRAIN="+e.bin, "RUNSC="+e.runsc, "JOB_USER="+jobUser)
		out, err := c.CombinedOutput()
		code, err := exitCode(err)
		if err != nil {
			t.Fatalf("%s %q: %v", script, args, err)
		}
		return code, string(out)
	}
	out := t.TempDir()

	for _, bad := range []struct {
		args []string
		want string
	}{
		{nil, "OUTDIR is missing"},
		{[]string{"--frobnicate", out}, "unknown flag --frobnicate"},
		{[]string{"--steps", "ten", out}, "--steps must be a whole number"},
		{[]string{out, out + "2"}, "one OUTDIR only"},
	} {
		code, msg := run(bad.args...)
		if code != 2 || strings.Count(strings.TrimSpace(msg), "\n") != 0 || !strings.Contains(msg, bad.want) {
			t.Errorf("%q: exit %d, %q; want exit 2 and one line naming %q", bad.args, code, msg, bad.want)
		}
	}

	code, msg := run("--dry-run", out)
	if code != 0 {
		t.Fatalf("dry run: exit %d\n%s", code, msg)
	}
	res, err := os.ReadFile(filepath.Join(out, "gpu-acceptance.txt"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(res)
	for _, want := range []string{
		"driver: none",
		"check runsc-driver-list: PASS",
		"check refuse-gpus-without-gpu: PASS",
		"check check-reports-no-gpu: PASS",
		"check train-cuda: SKIP",
		"check gpu-memory-limit: SKIP",
		"check daemon-gpu-exclusive: SKIP",
		"check no-leftovers: SKIP",
		"figure step-ratio: n/a (dry run)",
		"summary: 3 passed, 0 failed, 10 skipped",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("results file lacks %q:\n%s", want, text)
		}
	}
	if text != msg {
		t.Errorf("stdout and the results file differ:\nstdout:\n%s\nfile:\n%s", msg, text)
	}

	// A real run on a host without GPUs refuses in one line, after the checks
	// it could do.
	code, msg = run(t.TempDir())
	lines := strings.Split(strings.TrimSpace(msg), "\n")
	if last := lines[len(lines)-1]; code != 2 || !strings.HasPrefix(last, "gpu-acceptance: no NVIDIA GPU on this host") {
		t.Errorf("run without a GPU: exit %d, last line %q; want exit 2 and the no-GPU refusal", code, last)
	}
}
