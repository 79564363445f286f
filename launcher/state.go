package launcher

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/jobstate"
)

// JobState is what the state directory says about one job. It names every
// host resource the job owns, so gc can remove them after a crash. It never
// holds a secret value.
type JobState struct {
	ID            string              `json:"id"`
	User          string              `json:"user"`
	UID           int                 `json:"uid"`
	GID           int                 `json:"gid"`
	Command       []string            `json:"command"`
	Profile       string              `json:"profile"`
	ProfileDigest string              `json:"profile_digest"`
	CodeDir       string              `json:"code_dir"`
	Created       time.Time           `json:"created"`
	LauncherPID   int                 `json:"launcher_pid"`
	Status        string              `json:"status"`
	Log           string              `json:"log,omitempty"`
	ResultPath    string              `json:"result,omitempty"`
	Resources     []jobstate.Resource `json:"resources"`
	// RunscPID is the `runsc run` process once the job started.
	RunscPID int `json:"runsc_pid,omitempty"`
	// NetAddr is the job's address on its veth (jobs with a network), for
	// ps and for finding which rank holds an allocation's address.
	NetAddr string `json:"net_addr,omitempty"`
	// Allocation is the distributed job the job belongs to (--allocation).
	Allocation string            `json:"allocation,omitempty"`
	Live       bool              `json:"-"` // a launcher holds the lock
	Extra      map[string]string `json:"extra,omitempty"`
}

// Status values.
const (
	StatusPreparing = "preparing"
	StatusRunning   = "running"
	StatusStopping  = "stopping"
	StatusExited    = "exited"
	StatusLeftover  = "leftover" // teardown failed part-way; gc finishes it
	statusUnknown   = "unknown"  // List: no readable state.json
)

// Store keeps job state directories under Dir (/run/securetrain/jobs).
type Store struct {
	Dir string
}

// Handle is a live launcher's hold on its job's state: the lock is held for
// as long as the launcher lives, and released by the kernel when it dies.
type Handle struct {
	dir  string
	lock *os.File
	mu   sync.Mutex
	st   JobState
}

// validID reports whether id can name a job directory: a job id comes from
// the command line (securetrain kill ID), and "../../home/u/x" must not
// reach a state file, a lock or a pid someone else wrote.
func validID(id string) bool {
	if id == "" || id == "." || id == ".." || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Create makes the job's state directory and takes its lock.
func (s *Store) Create(st JobState) (*Handle, error) {
	if !validID(st.ID) {
		return nil, fmt.Errorf("state: job id %q: %w", st.ID, ErrNoJob)
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	dir := filepath.Join(s.Dir, st.ID)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("state: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		os.RemoveAll(dir)
		return nil, fmt.Errorf("state: lock %s: %w", dir, err)
	}
	h := &Handle{dir: dir, lock: lock, st: st}
	if err := h.save(); err != nil {
		h.Remove()
		return nil, err
	}
	return h, nil
}

// Dir is the job's state directory.
func (h *Handle) Dir() string { return h.dir }

// Record implements jobstate.Recorder: the resource is on disk before the
// caller creates it.
func (h *Handle) Record(r jobstate.Resource) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.st.Resources = append(h.st.Resources, r)
	return h.save()
}

// recorded returns how many resources are recorded so far.
func (h *Handle) recorded() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.st.Resources)
}

// recordedSince returns the resources recorded after the first n.
func (h *Handle) recordedSince(n int) []jobstate.Resource {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]jobstate.Resource(nil), h.st.Resources[n:]...)
}

// Update changes the state and persists it.
func (h *Handle) Update(f func(*JobState)) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	f(&h.st)
	return h.save()
}

// State returns a copy of the current state.
func (h *Handle) State() JobState {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.st
	st.Resources = append([]jobstate.Resource(nil), h.st.Resources...)
	return st
}

func (h *Handle) save() error {
	return writeJSONAtomic(filepath.Join(h.dir, "state.json"), h.st, 0o600)
}

// Remove deletes the state directory and releases the lock. Call it only
// after every recorded resource is gone.
func (h *Handle) Remove() error {
	// Rename first (atomically, while the lock is held): a concurrent gc or
	// epilog that opens the lock by name then finds nothing, instead of
	// recreating a lock file inside a directory being deleted.
	dead := filepath.Join(filepath.Dir(h.dir), removingPrefix+filepath.Base(h.dir))
	dir := h.dir
	if err := os.Rename(h.dir, dead); err == nil {
		dir = dead
	}
	err := os.RemoveAll(dir)
	if h.lock != nil {
		h.lock.Close()
		h.lock = nil
	}
	return err
}

// removingPrefix marks a state directory being removed.
const removingPrefix = ".removing-"

// Release closes the lock without removing anything (the state stays for gc).
func (h *Handle) Release() {
	if h.lock != nil {
		h.lock.Close()
		h.lock = nil
	}
}

// List returns every job under the store, with Live set when its launcher
// still holds the lock.
func (s *Store) List() ([]JobState, error) {
	ents, err := os.ReadDir(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	var out []JobState
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		if strings.HasPrefix(e.Name(), removingPrefix) {
			// A launcher died while removing its state: finish the job.
			os.RemoveAll(filepath.Join(s.Dir, e.Name()))
			continue
		}
		st, err := s.Load(e.Name())
		if err != nil {
			// A directory without a readable state still belongs to gc.
			st = JobState{ID: e.Name(), Status: statusUnknown}
		}
		st.Live = s.live(e.Name())
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Load reads one job's state.
func (s *Store) Load(id string) (JobState, error) {
	var st JobState
	if !validID(id) {
		return st, fmt.Errorf("job %q: %w", id, ErrNoJob)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, id, "state.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("state %s: %w", id, err)
	}
	st.Live = s.live(id)
	return st, nil
}

// live reports whether a launcher holds the job's lock.
func (s *Store) live(id string) bool {
	f, err := os.OpenFile(filepath.Join(s.Dir, id, "lock"), os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return true
	}
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return false
}

// Claim takes the lock of a dead launcher's job so gc can clean it without
// racing another gc. It fails if a launcher (or another gc) holds it.
func (s *Store) Claim(id string) (*Handle, error) {
	if !validID(id) {
		return nil, fmt.Errorf("job %q: %w", id, ErrNoJob)
	}
	dir := filepath.Join(s.Dir, id)
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("job %s is live: %w", id, err)
	}
	st, _ := s.Load(id)
	if st.ID == "" {
		st.ID = id
	}
	return &Handle{dir: dir, lock: lock, st: st}, nil
}

// writeJSONAtomic replaces path with v through a rename, so that a reader
// (gc after the launcher died, ps) sees the old record or the new one. It
// does not fsync: the state guards against the launcher's death, not the
// machine's. Its directory is a tmpfs on a normal host (/run), where a sync
// does nothing; after a machine crash the kernel resources it names are
// gone, and Vault leases end with their TTL. (On this project's test
// machines /run is ext4, and each sync cost 0.4-4 ms of the launch, eight
// times per job.)
func writeJSONAtomic(path string, v any, mode os.FileMode) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, mode)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("state: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
