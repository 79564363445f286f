package e2e

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks on what a job runs and reads: an insider who changes the code on
// the host during the run, and another user who swaps a pinned input or a
// --data directory (write access to its parent is enough) between the
// launcher's check and runsc's mount.

// exchange swaps two paths atomically (renameat2 RENAME_EXCHANGE), the way
// an attacker with write access to their parent does.
func exchange(t testing.TB, a, b string) {
	t.Helper()
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		t.Fatalf("renameat2 exchange: %v", err)
	}
}

// pausingRunsc is a host configuration whose runsc stops before `runsc run`
// until released: the window between the launcher's last check and runsc's
// mounts, made as wide as a test needs (today it is runsc's start-up, tens
// of milliseconds). Every other runsc call passes straight through.
type pausingRunsc struct {
	*env
	dir string
}

func newPausingRunsc(t *testing.T, e *env) *pausingRunsc {
	t.Helper()
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "runsc")
	script := "#!/bin/sh\nfor a in \"$@\"; do\n  if [ \"$a\" = run ]; then\n    : > " + dir + "/paused\n" +
		"    while [ ! -e " + dir + "/go ]; do sleep 0.02; done\n    rm -f " + dir + "/go\n    break\n  fi\ndone\nexec " + e.runsc + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "securetrain.yaml")
	body := regexp.MustCompile(`(?m)^runsc: .*$`).ReplaceAllString(string(base), "runsc: "+wrapper)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c := *e
	c.config = cfg
	return &pausingRunsc{env: &c, dir: dir}
}

// atMount waits until runsc is about to mount, runs swap, and lets runsc go.
func (p *pausingRunsc) atMount(t *testing.T, swap func()) {
	t.Helper()
	paused := filepath.Join(p.dir, "paused")
	deadline := time.Now().Add(90 * time.Second)
	for {
		if _, err := os.Stat(paused); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("runsc run was never reached")
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.Remove(paused)
	swap()
	if err := os.WriteFile(filepath.Join(p.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startJob starts `securetrain run` and returns its combined output and a
// wait function returning the exit code.
func startJob(t *testing.T, e *env, dir string, args ...string) (*syncBuffer, func() int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c := e.cmd(ctx, dir, nil, append([]string{"run", "--user", jobUser}, args...)...)
	out := &syncBuffer{}
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	return out, func() int {
		defer cancel()
		code, err := exitCode(c.Wait())
		if err != nil {
			t.Fatalf("securetrain run: %v\n%s", err, out)
		}
		return code
	}
}

// swappableInput is a pinned dataset directory and an evil directory of the
// same shape beside it, in a parent the attacker can write.
func swappableInput(t *testing.T, e *env) (data, evil, profile string) {
	t.Helper()
	ds := inputsDir(t, map[string]string{"train/a.txt": "verified-content\n", "evil/a.txt": "EVIL-content\n"})
	data, evil = filepath.Join(ds, "train"), filepath.Join(ds, "evil")
	manifest := filepath.Join(ds, "train.sha256")
	if r := e.run(t, ds, nil, "pin", "-o", manifest, data); r.code != 0 {
		t.Fatalf("securetrain pin: %s", r)
	}
	return data, evil, baseProfile + "inputs:\n  - {name: train, kind: dataset, path: " + data + ", manifest: " + manifest + "}\n"
}

// TestAttackHostSwapsPinnedInputBeforeMount: the input is verified, then
// swapped for an evil directory (rename exchange) before runsc mounts it,
// and swapped back before the end-of-run check. First at the exact moment
// (runsc held before it mounts), then in a loop while jobs start. The job
// must only ever read the verified content (or be refused).
func TestAttackHostSwapsPinnedInputBeforeMount(t *testing.T) {
	e := setup(t)
	data, evil, prof := swappableInput(t, e)
	dir := e.project(t, map[string]string{"p.yaml": prof})
	script := "cat /inputs/train/a.txt; echo ready; sleep 1"

	p := newPausingRunsc(t, e)
	out, wait := startJob(t, p.env, dir, "--profile", "p.yaml", "--", "/bin/sh", "-c", script)
	p.atMount(t, func() { exchange(t, data, evil) })
	waitFor(t, out, "ready")
	exchange(t, data, evil) // back, before the end-of-run check
	code := wait()
	atMount := strings.Count(out.String(), "EVIL-content")
	if atMount > 0 || code != 0 || !strings.Contains(out.String(), "verified-content") {
		t.Errorf("swapped at the mount: the job must read the verified input (exit %d, %d evil views):\n%s", code, atMount, out)
	}

	// The race itself: an exchange every few milliseconds while jobs start.
	const starts = 10
	var stop atomic.Bool
	var swaps sync.WaitGroup
	var flips int
	swaps.Add(1)
	go func() {
		defer swaps.Done()
		for !stop.Load() {
			if unix.Renameat2(unix.AT_FDCWD, data, unix.AT_FDCWD, evil, unix.RENAME_EXCHANGE) == nil {
				flips++
			}
			time.Sleep(time.Duration(2+rand.IntN(20)) * time.Millisecond)
		}
	}()
	evilViews, verified, refused := 0, 0, 0
	for range starts {
		r := e.job(t, dir, []string{"--profile", "p.yaml"}, "/bin/sh", "-c", "cat /inputs/train/a.txt")
		switch {
		case strings.Contains(r.stdout, "EVIL-content"):
			evilViews++
		case strings.Contains(r.stdout, "verified-content"):
			verified++
		case r.code == 125:
			refused++
		default:
			t.Errorf("unexpected run: %s", r)
		}
	}
	stop.Store(true)
	swaps.Wait()
	if flips%2 == 1 {
		exchange(t, data, evil)
	}
	attackFigure(t, "evil_views=%d of %d racing starts (verified %d, refused %d, %d exchanges); evil_views_at_mount=%d of 1", evilViews, starts, verified, refused, flips, atMount)
	if evilViews != 0 {
		t.Fatalf("%d job(s) of %d read the evil input", evilViews, starts)
	}
}

// TestAttackHostSwapsDataSourceBeforeMount: a --data directory is checked
// (resolved, opened) and then swapped for another one before runsc mounts
// it: the job must see the directory that was checked.
func TestAttackHostSwapsDataSourceBeforeMount(t *testing.T) {
	e := setup(t)
	ds := inputsDir(t, map[string]string{"data/a.txt": "checked-content\n", "evil/a.txt": "EVIL-content\n"})
	data, evil := filepath.Join(ds, "data"), filepath.Join(ds, "evil")
	dir := e.project(t, nil)
	p := newPausingRunsc(t, e)
	out, wait := startJob(t, p.env, dir, "--data", data+":/data/ds", "--", "/bin/sh", "-c", "cat /data/ds/a.txt")
	p.atMount(t, func() { exchange(t, data, evil) })
	code := wait()
	exchange(t, data, evil)
	evilViews := strings.Count(out.String(), "EVIL-content")
	attackFigure(t, "evil_views=%d", evilViews)
	if evilViews > 0 || code != 0 || !strings.Contains(out.String(), "checked-content") {
		t.Fatalf("the job must read the --data directory that was checked (exit %d):\n%s", code, out)
	}
}

// gitProject makes a git work tree of the job's user with files committed.
func gitProject(t *testing.T, e *env, files map[string]string) string {
	t.Helper()
	dir := e.project(t, files)
	g := testenvLook(t, "git")
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "clean"}} {
		c := exec.Command(g, append([]string{"-c", "safe.directory=*", "-c", "user.name=t", "-c", "user.email=t@t", "-C", dir}, args...)...)
		c.Env = []string{"HOME=" + dir, "PATH=/usr/bin:/bin", "GIT_CONFIG_NOSYSTEM=1"}
		if out, err := c.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v %s", args, err, out)
		}
	}
	filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Lchown(p, e.uid, e.gid) })
	return dir
}

// codeDep returns the attestation's code dependency and internal parameters.
func codeDep(t *testing.T, att string) (map[string]any, map[string]any) {
	t.Helper()
	st := statementOf(t, att)
	bd := st["predicate"].(map[string]any)["buildDefinition"].(map[string]any)
	for _, d := range bd["resolvedDependencies"].([]any) {
		if dm := d.(map[string]any); dm["name"] == "code" {
			return dm, bd["internalParameters"].(map[string]any)
		}
	}
	t.Fatalf("no code dependency in %s", att)
	return nil, nil
}

// insiderRun runs an attested job that reads train.sh and helper.txt at its
// start, then, once the host has acted (act), reads helper.txt again.
func insiderRun(t *testing.T, e *env, dir string, act func()) (string, resultRecord) {
	t.Helper()
	script := "sh train.sh; cat helper.txt; echo ready; while [ ! -e outputs/go ]; do sleep 0.05; done; cat helper.txt; echo end"
	out, wait := startJob(t, e, dir, "--report", "outputs/result.json", "--", "/bin/sh", "-c", script)
	waitFor(t, out, "ready")
	act()
	if err := os.WriteFile(filepath.Join(dir, "outputs", "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if code := wait(); code != 0 {
		t.Fatalf("job: exit %d\n%s", code, out)
	}
	res := readResult(t, filepath.Join(dir, "outputs", "result.json"))
	t.Cleanup(func() { os.RemoveAll(filepath.Join(dataDir, "jobs", res.ID)) })
	if res.Attestation == "" {
		t.Fatalf("no attestation: %+v", res)
	}
	return out.String(), res
}

// TestAttackInsiderSwapsCodeDuringRun: an insider rewrites a file of the
// code directory on the host while the job runs (Python imports lazily, so
// the job would run the new version). The job must keep reading what it
// started with, and the attestation and `securetrain verify` must name the
// change as a finding.
func TestAttackInsiderSwapsCodeDuringRun(t *testing.T) {
	e, pub := signingEnv(t, setup(t))
	dir := gitProject(t, e, map[string]string{"train.sh": "echo training\n", "helper.txt": "helper-v1\n"})
	out, res := insiderRun(t, e, dir, func() {
		if err := os.WriteFile(filepath.Join(dir, "helper.txt"), []byte("EVIL-helper\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	evilReads := strings.Count(out, "EVIL-helper")
	code, ip := codeDep(t, res.Attestation)
	b, _ := json.Marshal(code)
	v := e.run(t, dir, nil, "verify", res.Attestation, "--key", pub)
	reported := strings.Contains(v.stdout, "FINDING:") && strings.Contains(v.stdout, "M helper.txt")
	attackFigure(t, "evil_reads=%d verify_reports_change=%v", evilReads, reported)
	if evilReads != 0 || strings.Count(out, "helper-v1") != 2 {
		t.Fatalf("the job read the file written on the host during the run:\n%s", out)
	}
	if code["annotations"].(map[string]any)["snapshot"] != "start" || !strings.Contains(ip["codeRecheck"].(string), "M helper.txt") {
		t.Fatalf("the attestation must hold the start-time code and the change as a finding: %s %v", b, ip)
	}
	if v.code != 0 || !reported {
		t.Fatalf("verify must report the change: %s", v)
	}
}

// TestAttackInsiderRestoresTreeBeforeEnd: an insider runs tampered code and
// restores the clean tree (git checkout) before the job ends. The signed
// attestation must describe the tampered tree that ran (dirty, train.sh
// modified, its digest taken at the start), not the clean commit.
func TestAttackInsiderRestoresTreeBeforeEnd(t *testing.T) {
	e, pub := signingEnv(t, setup(t))
	dir := gitProject(t, e, map[string]string{"train.sh": "echo clean-training\n", "helper.txt": "helper\n"})
	if err := os.WriteFile(filepath.Join(dir, "train.sh"), []byte("echo EVIL-training\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, res := insiderRun(t, e, dir, func() {
		if err := os.WriteFile(filepath.Join(dir, "train.sh"), []byte("echo clean-training\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if !strings.Contains(out, "EVIL-training") {
		t.Fatalf("fixture: the tampered code did not run:\n%s", out)
	}
	code, ip := codeDep(t, res.Attestation)
	ann := code["annotations"].(map[string]any)
	b, _ := json.Marshal(code)
	named := ann["dirty"] == true && strings.Contains(string(b), `"M train.sh"`)
	v := e.run(t, dir, nil, "verify", res.Attestation, "--key", pub)
	attackFigure(t, "attestation_names_tampered_code=%v verify_reports_restore=%v", named, strings.Contains(v.stdout, "M train.sh"))
	if !named || ann["snapshot"] != "start" {
		t.Fatalf("the attestation must describe the tampered tree that ran: %s", b)
	}
	if !strings.Contains(ip["codeRecheck"].(string), "M train.sh") || v.code != 0 || !strings.Contains(v.stdout, "FINDING:") {
		t.Fatalf("the restore must be a finding in the attestation and verify: %v\n%s", ip, v)
	}
}
