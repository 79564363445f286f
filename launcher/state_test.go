package launcher

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/securetrain/securetrain/jobstate"
)

func TestStoreLifecycle(t *testing.T) {
	s := &Store{Dir: filepath.Join(t.TempDir(), "jobs")}
	if jobs, err := s.List(); err != nil || len(jobs) != 0 {
		t.Fatalf("empty store: %v, %v", jobs, err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, err := s.Create(JobState{ID: "aaaaaaaaaaaa", UID: 1000, Created: t0, Status: StatusPreparing, Command: []string{"python", "x.py"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Create(JobState{ID: "bbbbbbbbbbbb", UID: 1001, Created: t0.Add(time.Second), Status: StatusPreparing})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(JobState{ID: "aaaaaaaaaaaa"}); err == nil {
		t.Error("second Create of the same id succeeded")
	}
	for _, p := range []string{s.Dir, a.Dir()} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v (%v), want 0700", p, fi.Mode(), err)
		}
	}

	// Record is on disk before the caller creates the resource.
	r1 := jobstate.Resource{Kind: KindDir, Name: "/var/lib/securetrain/jobs/aaaaaaaaaaaa/home"}
	r2 := jobstate.Resource{Kind: KindRunsc, Name: "aaaaaaaaaaaa", Attrs: map[string]string{"root": "/run/securetrain/runsc"}}
	for _, r := range []jobstate.Resource{r1, r2} {
		if err := a.Record(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Update(func(st *JobState) { st.Status = StatusRunning }); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load("aaaaaaaaaaaa")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusRunning || !st.Live || len(st.Resources) != 2 || st.Resources[1].Attrs["root"] != "/run/securetrain/runsc" || !slices.Equal(st.Command, []string{"python", "x.py"}) {
		t.Errorf("loaded %+v", st)
	}
	if fi, err := os.Stat(filepath.Join(a.Dir(), "state.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode %v (%v), want 0600", fi.Mode(), err)
	}
	if _, err := os.Stat(filepath.Join(a.Dir(), "state.json.tmp")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
	// State returns a copy.
	cp := a.State()
	cp.Resources[0].Name = "changed"
	if a.State().Resources[0].Name != r1.Name {
		t.Error("State() shares its resources slice")
	}

	// Both live, listed oldest first.
	jobs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 2 || jobs[0].ID != "aaaaaaaaaaaa" || jobs[1].ID != "bbbbbbbbbbbb" || !jobs[0].Live || !jobs[1].Live {
		t.Fatalf("list %+v", jobs)
	}
	// A live job cannot be claimed.
	if _, err := s.Claim("aaaaaaaaaaaa"); err == nil {
		t.Error("claimed a live job")
	}

	// The launcher of a dies: the kernel drops its lock (here: Release).
	a.Release()
	jobs, _ = s.List()
	if jobs[0].Live || !jobs[1].Live {
		t.Errorf("after a's launcher died: live %v %v, want false true", jobs[0].Live, jobs[1].Live)
	}
	c, err := s.Claim("aaaaaaaaaaaa")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.State(); len(got.Resources) != 2 || got.ID != "aaaaaaaaaaaa" {
		t.Errorf("claimed state %+v", got)
	}
	if _, err := s.Claim("aaaaaaaaaaaa"); err == nil {
		t.Error("a second gc claimed a claimed job")
	}
	if l, _ := s.Load("aaaaaaaaaaaa"); !l.Live {
		t.Error("claimed job not shown as held")
	}
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "aaaaaaaaaaaa")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("state dir left: %v", err)
	}
	if err := b.Remove(); err != nil {
		t.Fatal(err)
	}
	if jobs, _ := s.List(); len(jobs) != 0 {
		t.Errorf("left: %+v", jobs)
	}
}

func TestStoreUnreadableState(t *testing.T) {
	s := &Store{Dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(s.Dir, "cccccccccccc"), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(s.Dir, "cccccccccccc", "state.json"), []byte("{not json"), 0o600)
	os.WriteFile(filepath.Join(s.Dir, "not-a-dir"), nil, 0o600)
	jobs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0].ID != "cccccccccccc" || jobs[0].Status != "unknown" || jobs[0].Live {
		t.Errorf("list %+v", jobs)
	}
	h, err := s.Claim("cccccccccccc")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Remove(); err != nil {
		t.Fatal(err)
	}
}

func TestStoreRefusesPathIDs(t *testing.T) {
	base := t.TempDir()
	s := &Store{Dir: filepath.Join(base, "jobs")}
	// Someone else's directory that looks like a job.
	other := filepath.Join(base, "home", "mallory", "job")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "state.json"), []byte(`{"id":"x","uid":1000,"launcher_pid":1}`), 0o644)
	for _, id := range []string{"../home/mallory/job", "..", ".", "", "a/b", "/etc"} {
		if _, err := s.Load(id); !errors.Is(err, ErrNoJob) {
			t.Errorf("Load(%q) = %v, want ErrNoJob", id, err)
		}
		if _, err := s.Claim(id); !errors.Is(err, ErrNoJob) {
			t.Errorf("Claim(%q) = %v, want ErrNoJob", id, err)
		}
		if _, err := s.Create(JobState{ID: id}); !errors.Is(err, ErrNoJob) {
			t.Errorf("Create(%q) = %v, want ErrNoJob", id, err)
		}
	}
	if _, err := os.Stat(filepath.Join(other, "lock")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("Claim created a lock outside the store")
	}
	for _, id := range []string{NewID(), "job-1_a.b"} {
		if !validID(id) {
			t.Errorf("validID(%q) = false", id)
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := NewID()
		if len(id) != 12 || seen[id] || !validID(id) {
			t.Fatalf("NewID %q (len %d, seen %v)", id, len(id), seen[id])
		}
		seen[id] = true
	}
}

// The subsystems record their resources through the handle.
var _ jobstate.Recorder = (*Handle)(nil)
