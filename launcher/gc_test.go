package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/jobstate"
)

// gcHost is a launcher on a temporary state tree whose runsc is a script
// that logs its calls and lists the given containers.
func gcHost(t *testing.T, containers ...string) (*Launcher, string) {
	t.Helper()
	dir := t.TempDir()
	logf := filepath.Join(dir, "runsc.log")
	var list []string
	for _, c := range containers {
		list = append(list, fmt.Sprintf(`{"id":%q,"status":"running"}`, c))
	}
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\ncase \"$*\" in *' list --format=json') echo '[%s]';; esac\n", logf, strings.Join(list, ","))
	bin := filepath.Join(dir, "runsc")
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	h := &configs.Host{StateDir: filepath.Join(dir, "run"), DataDir: filepath.Join(dir, "lib")}
	l := &Launcher{Host: h, Runsc: bin, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := os.MkdirAll(l.runsc().Root, 0o700); err != nil {
		t.Fatal(err)
	}
	// What runsc knows it keeps as state files under its root (Delete
	// asks runsc only about those).
	for _, c := range containers {
		os.WriteFile(filepath.Join(l.runsc().Root, c+"_sandbox:"+c+".state"), nil, 0o600)
	}
	return l, logf
}

func fakeCgroupRoot(t *testing.T, v2 bool) string {
	t.Helper()
	old := cgroupRoot
	cgroupRoot = t.TempDir()
	t.Cleanup(func() { cgroupRoot = old })
	if v2 {
		os.WriteFile(filepath.Join(cgroupRoot, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644)
	}
	return cgroupRoot
}

func TestGC(t *testing.T) {
	l, logf := gcHost(t, "orphan000001", "bbbbbbbbbbbb")
	// a's sandbox outlived its launcher: runsc still has its state.
	os.WriteFile(filepath.Join(l.runsc().Root, "aaaaaaaaaaaa_sandbox:aaaaaaaaaaaa.state"), nil, 0o600)
	cg := fakeCgroupRoot(t, true)
	store := l.Store()

	// a: its launcher was SIGKILLed after creating everything.
	home := filepath.Join(l.Host.DataDir, "jobs", "aaaaaaaaaaaa", "home")
	os.MkdirAll(home, 0o700)
	os.MkdirAll(filepath.Join(cg, "securetrain", "aaaaaaaaaaaa"), 0o755)
	a, err := store.Create(JobState{ID: "aaaaaaaaaaaa"})
	if err != nil {
		t.Fatal(err)
	}
	res := []jobstate.Resource{
		{Kind: KindDir, Name: home},
		{Kind: KindCgroup, Name: "/securetrain/aaaaaaaaaaaa"},
		{Kind: KindRunsc, Name: "aaaaaaaaaaaa", Attrs: map[string]string{"root": l.runsc().Root}},
	}
	for _, r := range res {
		a.Record(r)
	}
	a.Release()
	// b: live.
	b, err := store.Create(JobState{ID: "bbbbbbbbbbbb"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Remove()
	b.Record(jobstate.Resource{Kind: KindRunsc, Name: "bbbbbbbbbbbb"})
	// c: dead, with a resource nobody knows how to remove.
	c, err := store.Create(JobState{ID: "cccccccccccc"})
	if err != nil {
		t.Fatal(err)
	}
	c.Record(jobstate.Resource{Kind: "netns", Name: "st-cccccccccccc"})
	c.Release()

	rep, err := l.GC(context.Background())
	if err == nil || !strings.Contains(err.Error(), "job cccccccccccc: no cleaner for") {
		t.Errorf("GC error %v, want the unknown resource of c", err)
	}
	if !slices.Equal(rep.Jobs, []string{"aaaaaaaaaaaa"}) {
		t.Errorf("jobs cleaned %v", rep.Jobs)
	}
	wantRes := slices.Clone(res)
	slices.Reverse(wantRes)
	if len(rep.Resources) != 3 || rep.Resources[0].Kind != KindRunsc || rep.Resources[1].Kind != KindCgroup || rep.Resources[2].Kind != KindDir {
		t.Errorf("resources removed %v, want newest first %v", rep.Resources, wantRes)
	}
	if !slices.Equal(rep.Orphans, []string{"orphan000001"}) {
		t.Errorf("orphans %v", rep.Orphans)
	}
	for _, p := range []string{home, filepath.Join(cg, "securetrain", "aaaaaaaaaaaa"), filepath.Join(store.Dir, "aaaaaaaaaaaa")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left: %v", p, err)
		}
	}
	jobs, _ := store.List()
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	if !slices.Equal(ids, []string{"bbbbbbbbbbbb", "cccccccccccc"}) && !slices.Equal(ids, []string{"cccccccccccc", "bbbbbbbbbbbb"}) {
		t.Errorf("jobs left %v, want b (live) and c (to retry)", ids)
	}
	for _, j := range jobs {
		if j.ID == "cccccccccccc" && j.Live {
			t.Error("c still locked after gc")
		}
	}
	calls, _ := os.ReadFile(logf)
	for _, want := range []string{"delete --force aaaaaaaaaaaa", "list --format=json", "delete --force orphan000001"} {
		if !strings.Contains(string(calls), want) {
			t.Errorf("runsc calls %q lack %q", calls, want)
		}
	}
	if strings.Contains(string(calls), "delete --force bbbbbbbbbbbb") {
		t.Error("gc deleted a live job's container")
	}
}

func TestRemoveCgroup(t *testing.T) {
	cg := fakeCgroupRoot(t, true)
	os.MkdirAll(filepath.Join(cg, "securetrain", "j1"), 0o755)
	os.MkdirAll(filepath.Join(cg, "system.slice"), 0o755)
	if err := removeCgroup("/securetrain/j1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(cg, "securetrain", "j1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("v2 cgroup left: %v", err)
	}
	if err := removeCgroup("/securetrain/j1"); err != nil {
		t.Errorf("already gone: %v", err)
	}
	for _, rel := range []string{"/system.slice", "/securetrain/../system.slice", "securetrain/j1", "/"} {
		if err := removeCgroup(rel); err != nil {
			t.Errorf("%s: %v", rel, err)
		}
	}
	if _, err := os.Stat(filepath.Join(cg, "system.slice")); err != nil {
		t.Errorf("removed a cgroup outside /securetrain/: %v", err)
	}

	cg = fakeCgroupRoot(t, false)
	for _, ctl := range []string{"cpu", "memory", "pids"} {
		os.MkdirAll(filepath.Join(cg, ctl, "securetrain", "j2"), 0o755)
	}
	if err := removeCgroup("/securetrain/j2"); err != nil {
		t.Fatal(err)
	}
	for _, ctl := range []string{"cpu", "memory", "pids"} {
		if _, err := os.Stat(filepath.Join(cg, ctl, "securetrain", "j2")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("v1 %s cgroup left: %v", ctl, err)
		}
	}
}

func TestKill(t *testing.T) {
	l, logf := gcHost(t)
	store := l.Store()
	h, err := store.Create(JobState{ID: "dddddddddddd", UID: 1000, LauncherPID: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Remove()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		id   string
		uid  int
		want string
	}{
		{"unknown", "eeeeeeeeeeee", 0, "job eeeeeeeeeeee: no such job"},
		{"path", "../../etc", 0, "job ../../etc: no such job"},
		{"someone else's", "dddddddddddd", 1001, "job dddddddddddd: no such job"},
		{"pid 1 is no launcher", "dddddddddddd", 1000, "job dddddddddddd: launcher pid 1 is not a securetrain process"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Kill(ctx, Viewer{UID: tc.uid, Admin: tc.uid == 0}, tc.id, false)
			if err == nil || err.Error() != tc.want {
				t.Errorf("Kill = %v, want %s", err, tc.want)
			}
		})
	}
	if err := l.Kill(ctx, Viewer{UID: 1000}, "dddddddddddd", true); err != nil {
		t.Fatalf("force: %v", err)
	}
	if calls, _ := os.ReadFile(logf); !strings.Contains(string(calls), "kill --all dddddddddddd KILL") {
		t.Errorf("force kill: runsc calls %q", calls)
	}
	h.Release()
	if err := l.Kill(ctx, Viewer{Admin: true}, "dddddddddddd", false); err == nil || !strings.Contains(err.Error(), "is not running") {
		t.Errorf("dead job: %v", err)
	}
}

// TestGCJobStartedDuringGC starts a job between gc's listing of job states
// and its listing of runsc containers: the new job's container must live.
func TestGCJobStartedDuringGC(t *testing.T) {
	dir := t.TempDir()
	logf, listing, proceed := filepath.Join(dir, "runsc.log"), filepath.Join(dir, "listing"), filepath.Join(dir, "proceed")
	for _, f := range []string{listing, proceed} {
		if err := unix.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := fmt.Sprintf("#!/bin/sh\necho \"$*\" >> %s\ncase \"$*\" in *' list --format=json') echo listing > %s; cat %s > /dev/null; echo '[{\"id\":\"ffffffffffff\"}]';; esac\n", logf, listing, proceed)
	bin := filepath.Join(dir, "runsc")
	os.WriteFile(bin, []byte(script), 0o755)
	l := &Launcher{Host: &configs.Host{StateDir: filepath.Join(dir, "run")}, Runsc: bin, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	os.MkdirAll(l.runsc().Root, 0o700)

	type result struct {
		rep GCReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := l.GC(context.Background())
		done <- result{rep, err}
	}()
	// gc has listed the (empty) store and now asks runsc for containers.
	if _, err := os.ReadFile(listing); err != nil {
		t.Fatal(err)
	}
	h, err := l.Store().Create(JobState{ID: "ffffffffffff"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Remove()
	h.Record(jobstate.Resource{Kind: KindRunsc, Name: "ffffffffffff"})
	if err := os.WriteFile(proceed, []byte("go\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.rep.Orphans) != 0 {
		t.Errorf("gc took the new job's container for an orphan: %v", r.rep.Orphans)
	}
	if calls, _ := os.ReadFile(logf); strings.Contains(string(calls), "delete") {
		t.Errorf("gc deleted a live job's container: %q", calls)
	}
}
