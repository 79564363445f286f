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

// ErrNotPermitted is matched (errors.Is) by every refusal of a path the
// job's user could not open themselves.
var ErrNotPermitted = errors.New("the job's user may not use it")

// PathError is a path refused at the privilege boundary. Its message is one
// line: the flag or role, the path as given, and why.
type PathError struct {
	What, Path, Why string
}

func (e *PathError) Error() string        { return e.What + " " + e.Path + ": " + e.Why }
func (e *PathError) Is(target error) bool { return target == ErrNotPermitted }

// stage puts what the job mounts from paths a user named beyond the reach
// of renames: every such path - the code directory, --data, interpreter
// environments, pinned inputs, and for a daemon request the outputs
// directory - is resolved and opened without following any symlink in the
// resolved path (openat2 RESOLVE_NO_SYMLINKS), and what was opened is
// bind-mounted, through its file descriptor, onto a root-owned staging
// point; the sandbox mounts the staging point. What runsc mounts is then
// the very directory (or file) that was opened, not the name again: a
// rename exchange of the path after this changes nothing the job sees, and
// pinned inputs are rechecked on their staging points (integrity.go), so a
// swap before it is refused. (runsc refuses a /proc/PID/fd/N bind source:
// its gofer mounts from its own mount namespace.)
//
// For a request made by a user who is not root (Request.Confine, set by the
// daemon) this is also the privilege boundary: the paths are opened on a
// thread whose file-system identity is the job's user (so the kernel checks
// search permission on every component with the user's credentials), then
// checked for the access the mount gives (read, or write for outputs). The
// --report file's directory must be writable by the user; the report itself
// is written as the user. Without Confine (root ran securetrain) the paths
// are opened as root, as prepare resolved them, and the outputs directory,
// which the job's outputs step creates as the user, is mounted by name.
func (l *Launcher) stage(id string, pl *plan, h *Handle, undo *cleanup) (staging, error) {
	items := stageItems(pl)
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
	u := pl.req.Caller
	open := func() error { return openItems(pl, items, fds) }
	var err error
	if pl.req.Confine {
		err = asUser(u.UID, u.GID, u.Groups, open)
	} else {
		err = open()
	}
	if err != nil {
		return nil, err
	}
	stageDir := filepath.Join(l.Host.StateDir, "stage", id)
	if err := os.MkdirAll(filepath.Dir(stageDir), 0o700); err != nil {
		return nil, err
	}
	if err := l.record(h, undo, jobstate.Resource{Kind: KindEmptyDir, Name: stageDir}); err != nil {
		return nil, err
	}
	if err := os.Mkdir(stageDir, 0o700); err != nil {
		return nil, err
	}
	st := staging{}
	for i, it := range items {
		point := filepath.Join(stageDir, strconv.Itoa(i))
		if err := l.record(h, undo, jobstate.Resource{Kind: KindMount, Name: point}); err != nil {
			return nil, err
		}
		if err := bindOpened(fds[i], point, it); err != nil {
			return nil, err
		}
		st[it.src] = point
	}
	return st, nil
}

// stageItem is one source the user named.
type stageItem struct {
	src   string // the Source string the mounts use
	what  string
	write bool
}

// stageItems lists the sources the user named: the code directory, the
// outputs (daemon requests), data, interpreter environments and inputs.
// The launcher's own mounts (the host-minimal root, the GPU driver
// libraries) are the host's, not named by the user.
func stageItems(pl *plan) []stageItem {
	items := []stageItem{{pl.codeDir, "code directory", false}}
	if pl.req.Confine {
		items = append(items, stageItem{pl.outputDir, "output", true})
	}
	own := map[[2]string]bool{}
	if hostMounts, _, err := sandbox.HostRoot("/"); err == nil {
		for _, m := range hostMounts {
			own[[2]string{m.Source, m.Target}] = true
		}
	}
	for _, lib := range pl.gpuLibs {
		own[[2]string{lib, "/usr/local/securetrain-nvidia/lib/" + filepath.Base(lib)}] = true
	}
	dataTargets := map[string]string{}
	for _, d := range pl.req.Data {
		dataTargets[d.Target] = "--data " + d.Source + " ->"
	}
	named := func(src string) bool {
		return slices.ContainsFunc(items, func(it stageItem) bool { return it.src == src })
	}
	for _, m := range pl.mounts {
		// A source under /usr or /opt is staged like any other: the host
		// root shows those directories, but not at another target, and a
		// user-writable place there (/usr/local for group staff, a conda
		// install in /opt) can have a link to /root swapped in.
		if m.Kind != sandbox.Bind || own[[2]string{m.Source, m.Target}] || named(m.Source) {
			continue
		}
		what := dataTargets[m.Target]
		if what == "" {
			what = "interpreter environment"
		}
		items = append(items, stageItem{m.Source, what, !m.ReadOnly})
	}
	for _, in := range pl.integrity.inputs {
		if !named(in.Path) {
			items = append(items, stageItem{in.Path, "input " + in.Name, false})
		}
	}
	return items
}

// openItems opens every item (creating the writable ones) into fds and
// checks the --report file's directory, as the current thread's identity.
func openItems(pl *plan, items []stageItem, fds []int) error {
	u := pl.req.Caller
	who := u.Name
	if !pl.req.Confine {
		who = "root"
	}
	for i, it := range items {
		if it.write {
			// Created as the user, with the user's permissions.
			if err := os.MkdirAll(it.src, 0o755); err != nil {
				return &PathError{it.what, it.src, fmt.Sprintf("user %s cannot create it (%v)", u.Name, unwrapFS(err))}
			}
		}
		fd, why := openChecked(it.src, it.write)
		if why != "" {
			return &PathError{it.what, it.src, fmt.Sprintf(why, who)}
		}
		fds[i] = fd
	}
	if rp := pl.req.ReportPath; rp != "" && pl.req.Confine {
		if !filepath.IsAbs(rp) {
			rp = filepath.Join(pl.codeDir, rp)
		}
		fd, why := openChecked(filepath.Dir(rp), true)
		if why != "" {
			return &PathError{"--report", pl.req.ReportPath, fmt.Sprintf(why, u.Name) + " (its directory)"}
		}
		unix.Close(fd)
	}
	return nil
}

// bindOpened makes point (created like what fd is) and bind-mounts fd's
// file there, private, and read-only unless the item is written.
func bindOpened(fd int, point string, it stageItem) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	var err error
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		err = os.Mkdir(point, 0o700)
	} else {
		err = os.WriteFile(point, nil, 0o600)
	}
	if err != nil {
		return err
	}
	src := "/proc/self/fd/" + strconv.Itoa(fd)
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
	return nil
}

// openChecked opens p as the current thread's file-system identity: the
// symlinks in p are resolved first (with the user's permissions, so a link
// into a directory the user cannot search fails), then the result is opened
// with RESOLVE_NO_SYMLINKS, so a link swapped in meanwhile fails too. The
// access a mount gives (read, or read and write) is checked on what was
// opened, with the thread's fsuid, fsgid and groups (AT_EACCESS). On refusal
// it returns why, with one %s for the user's name.
func openChecked(p string, write bool) (int, string) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return -1, fmt.Sprintf("user %%s cannot reach it (%v)", unwrapFS(err))
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, real, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return -1, "a symlink was swapped into the path while it was checked for user %s"
		}
		return -1, fmt.Sprintf("user %%s cannot reach %s (%v)", real, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Sprintf("stat as user %%s: %v", err)
	}
	mode := uint32(unix.R_OK)
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		mode |= unix.X_OK
	}
	need := "read"
	if write {
		mode |= unix.W_OK
		need = "write"
	}
	if err := unix.Faccessat2(fd, "", mode, unix.AT_EMPTY_PATH|unix.AT_EACCESS); err != nil {
		unix.Close(fd)
		at := ""
		if real != filepath.Clean(p) {
			at = " (it resolves to " + real + ")"
		}
		return -1, fmt.Sprintf("user %%s cannot %s it%s: %v", need, at, err)
	}
	return fd, ""
}

// staging maps each source stage checked to its staging mount point (and
// an attested job's code directory to its snapshot).
type staging map[string]string

// sources returns a copy of the mounts in which those whose sources were
// staged come from their staging points.
func (st staging) sources(ms []sandbox.Mount) []sandbox.Mount {
	out := slices.Clone(ms)
	for i := range out {
		if s, ok := st[out[i].Source]; ok && out[i].Kind == sandbox.Bind {
			out[i].Source = s
		}
	}
	return out
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
			return &PathError{"profile file", p, fmt.Sprintf("the caller cannot reach it (%v)", unwrapFS(err))}
		}
		fd, err := unix.Openat2(unix.AT_FDCWD, real, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW,
			Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return &PathError{"profile file", p, fmt.Sprintf("the caller cannot read it (%v)", err)}
		}
		f := os.NewFile(uintptr(fd), real)
		defer f.Close()
		data, err = io.ReadAll(io.LimitReader(f, 1<<20))
		return err
	})
	return data, err
}

// CheckPathAs checks, as the caller, that p can be reached and read (or
// written, with write). The daemon runs it on every path a request names
// before the launcher looks at them as root, so that a refusal never tells
// a user whether something exists where they cannot look.
func CheckPathAs(c Caller, what, p string, write bool) error {
	return asUser(c.UID, c.GID, c.Groups, func() error {
		fd, why := openChecked(p, write)
		if why != "" {
			return &PathError{what, p, fmt.Sprintf(why, c.Name)}
		}
		unix.Close(fd)
		return nil
	})
}
