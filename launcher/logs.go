package launcher

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ErrNotJobID is wrapped when a name given as a job id is not one (a path,
// "." or ".."): nothing is looked up for it.
var ErrNotJobID = errors.New("is not a job id")

// ErrNoLog is wrapped when a job has no log the viewer may read: another
// user's log is reported the same way as a missing one.
var ErrNoLog = errors.New("no log for job")

// Viewer is who asks about jobs (ps, logs, kill): a user sees their own
// jobs; root and the daemon's admin groups see every job.
type Viewer struct {
	UID   int
	Admin bool
}

// Sees reports whether the viewer may see a job of uid.
func (v Viewer) Sees(uid int) bool { return v.Admin || v.UID == uid }

// CheckJobID refuses a name that is not a job id (one path element, not
// "." or ".."), before anything is opened for it.
func CheckJobID(id string) error {
	if id == "" || filepath.Base(id) != id || id == "." || id == ".." {
		return fmt.Errorf("%q %w", id, ErrNotJobID)
	}
	return nil
}

// OpenLog opens job id's log (running or finished) for v: the file
// <data_dir>/jobs/ID/job.log, opened without following a symlink, and only
// when its owner is the viewer (or the viewer is an admin).
func (l *Launcher) OpenLog(v Viewer, id string) (*os.File, error) {
	if err := CheckJobID(id); err != nil {
		return nil, err
	}
	noLog := fmt.Errorf("%w %s", ErrNoLog, id)
	f, err := os.OpenFile(filepath.Join(l.JobData(id), "job.log"), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, noLog
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || !v.Sees(int(st.Uid)) {
		f.Close()
		return nil, noLog
	}
	return f, nil
}
