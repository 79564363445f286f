package launcher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/sandbox"
)

// KindMount is a bind mount the launcher made on the host: the staged source
// of a job's mount (see confine). Its cleanup unmounts and removes the empty
// mount point, never anything below it.
const KindMount = "mount"

// KindEmptyDir is a directory removed only once empty (rmdir, never
// recursively): the staging directory of a job's mounts.
const KindEmptyDir = "emptydir"

// ErrNotPermitted is wrapped by every refusal of a path the job's user could
// not open themselves.
var ErrNotPermitted = errors.New("the job's user may not use it")

// confine is the privilege boundary for a request made by a user who is not
// root (Request.Confine, set by the daemon). Every path the request names
// that becomes a mount - the code directory, the outputs directory, --data,
// interpreter environments - is resolved and opened on a thread whose
// file-system identity is the job's user (so the kernel checks search
// permission on every component with the user's credentials), without
// following any symlink in the resolved path (openat2 RESOLVE_NO_SYMLINKS),
// then checked for the access the mount gives (read, or write for outputs).
// What was opened is then bind-mounted, through its file descriptor, onto a
// root-owned staging point, and the sandbox mounts the staging point: what
// runsc mounts is the very directory that was checked, not the name again
// (runsc refuses a /proc/PID/fd/N bind source: its gofer mounts from its own
// mount namespace). The --report file's directory must be writable by the
// user; the report itself is written as the user.
func (l *Launcher) confine(id string, pl *plan, h *Handle, undo *cleanup) error {
	u := pl.req.Caller
	type item struct {
		src   string // the Source string the mounts use
		what  string
		write bool
	}
	items := []item{{pl.codeDir, "code directory", false}, {pl.outputDir, "output", true}}
	// The launcher's own mounts (the host-minimal root, the GPU driver
	// libraries) are the host's, not named by the user; everything else is.
	own := map[[2]string]bool{}
	if hostMounts, _, err := sandbox.HostRoot("/"); err == nil {
		for _, m := range hostMounts {
			own[[2]string{m.Source, m.Target}] = true
		}
	}
	for _, lib := range pl.gpuLibs {
		own[[2]string{lib, "/usr/local/securetrain-nvidia/lib/" + filepath.Base(lib)}] = true
	}
	for _, m := range pl.mounts {
		if m.Kind != sandbox.Bind || own[[2]string{m.Source, m.Target}] || hostVisible(m.Source) ||
			slices.ContainsFunc(items, func(it item) bool { return it.src == m.Source }) {
			continue
		}
		items = append(items, item{m.Source, "mount source", !m.ReadOnly})
	}
	fds := make([]int, len(items))
	for i := range fds {
		fds[i] = -1
	}
	defer func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	err := asUser(u.UID, u.GID, u.Groups, func() error {
		for i, it := range items {
			if it.write {
				// Created as the user, with the user's permissions.
				if err := os.MkdirAll(it.src, 0o755); err != nil {
					return fmt.Errorf("%s %s: %w: %w", it.what, it.src, unwrapFS(err), ErrNotPermitted)
				}
			}
			fd, err := openChecked(it.src, it.write)
			if err != nil {
				return fmt.Errorf("%s %s: %w", it.what, it.src, err)
			}
			fds[i] = fd
		}
		if rp := pl.req.ReportPath; rp != "" {
			if !filepath.IsAbs(rp) {
				rp = filepath.Join(pl.codeDir, rp)
			}
			fd, err := openChecked(filepath.Dir(rp), true)
			if err != nil {
				return fmt.Errorf("--report %s: %w", pl.req.ReportPath, err)
			}
			unix.Close(fd)
		}
		return nil
	})
	if err != nil {
		return err
	}
	stageDir := filepath.Join(l.Host.StateDir, "stage", id)
	if err := os.MkdirAll(filepath.Dir(stageDir), 0o700); err != nil {
		return err
	}
	if err := l.record(h, undo, jobstate.Resource{Kind: KindEmptyDir, Name: stageDir}); err != nil {
		return err
	}
	if err := os.Mkdir(stageDir, 0o700); err != nil {
		return err
	}
	pl.req.staged = map[string]string{}
	for i, it := range items {
		var st unix.Stat_t
		if err := unix.Fstat(fds[i], &st); err != nil {
			return err
		}
		point := filepath.Join(stageDir, strconv.Itoa(i))
		if err := l.record(h, undo, jobstate.Resource{Kind: KindMount, Name: point}); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			err = os.Mkdir(point, 0o700)
		} else {
			err = os.WriteFile(point, nil, 0o600)
		}
		if err != nil {
			return err
		}
		src := "/proc/self/fd/" + strconv.Itoa(fds[i])
		if err := unix.Mount(src, point, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("staging %s %s: %w", it.what, it.src, err)
		}
		if err := unix.Mount("", point, "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("staging %s %s: %w", it.what, it.src, err)
		}
		if !it.write {
			if err := unix.Mount("", point, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
				return fmt.Errorf("staging %s %s read-only: %w", it.what, it.src, err)
			}
		}
		pl.req.staged[it.src] = point
	}
	return nil
}

// openChecked opens p as the current thread's file-system identity: the
// symlinks in p are resolved first (with the user's permissions, so a link
// into a directory the user cannot search fails), then the result is opened
// with RESOLVE_NO_SYMLINKS, so a link swapped in meanwhile fails too. The
// access a mount gives (read, or read and write) is checked on what was
// opened, with the thread's fsuid, fsgid and groups (AT_EACCESS).
func openChecked(p string, write bool) (int, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return -1, fmt.Errorf("%w: %w", unwrapFS(err), ErrNotPermitted)
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, real, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return -1, fmt.Errorf("a symlink was swapped into the path: %w", ErrNotPermitted)
		}
		return -1, fmt.Errorf("%w: %w", err, ErrNotPermitted)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	mode := uint32(unix.R_OK)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		mode |= unix.X_OK
	}
	if write {
		mode |= unix.W_OK
	}
	if err := unix.Faccessat2(fd, "", mode, unix.AT_EMPTY_PATH|unix.AT_EACCESS); err != nil {
		unix.Close(fd)
		need := "read"
		if write {
			need = "write"
		}
		return -1, fmt.Errorf("the job's user cannot %s it (%w): %w", need, err, ErrNotPermitted)
	}
	return fd, nil
}

// stagedSources points the mounts whose sources confine checked at their
// staging points.
func (r *Request) stagedSources(ms []sandbox.Mount) {
	for i := range ms {
		if s, ok := r.staged[ms[i].Source]; ok && ms[i].Kind == sandbox.Bind {
			ms[i].Source = s
		}
	}
}

// cleanMount removes a staging mount: a lazy unmount, then the mount point
// itself with rmdir/unlink, which fails rather than descend into a directory
// that is still mounted. Not mounted or gone counts as clean.
func cleanMount(_ context.Context, r jobstate.Resource) error {
	if err := unix.Unmount(r.Name, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := os.Remove(r.Name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// cleanEmptyDir removes a directory only if it is empty.
func cleanEmptyDir(_ context.Context, r jobstate.Resource) error {
	if err := unix.Rmdir(r.Name); err != nil && !errors.Is(err, unix.ENOENT) {
		return err
	}
	return nil
}

// ReadFileAs reads the file p with the file-system identity of uid, gid and
// groups (so a file the user could not read is refused), without following
// a symlink swapped in after resolution. The daemon reads an admin caller's
// profile file with it.
func ReadFileAs(uid, gid int, groups []int, p string) ([]byte, error) {
	var data []byte
	err := asUser(uid, gid, groups, func() error {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Errorf("%w: %w", unwrapFS(err), ErrNotPermitted)
		}
		fd, err := unix.Openat2(unix.AT_FDCWD, real, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return fmt.Errorf("%w: %w", err, ErrNotPermitted)
		}
		f := os.NewFile(uintptr(fd), real)
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, 1<<20))
		return err
	})
	return data, err
}
