package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

// EtcMaxFile bounds one file copied from the host's /etc: the allowlisted
// entries are configuration, kilobytes each.
const EtcMaxFile = 16 << 20

// HostEtcView returns a directory under cacheDir that holds copies of the
// host's allowlisted /etc entries (HostEtcEntries), for a host-minimal
// root to show read-only at /etc, with empty mount points for the job's own
// files (EtcFiles). It is made once for each content of those entries (a
// listing of their paths, kinds, sizes, times and link targets names it)
// and shared, read-only, by every job that runs while the host's /etc stays
// as it was. One mount instead of one per entry: runsc sets up every bind
// mount through its gofer at start, ~2 ms apiece, and the entries are ~25.
//
// Entries are copied as bind mounts of them showed them: a top-level link
// (/etc/localtime) followed, links inside a directory (/etc/ssl/certs) kept,
// as they resolve inside the sandbox. What the job could not read on the
// host (not world-readable, as /etc/ssl/private) is not copied, nor is
// anything but regular files, directories and links.
func HostEtcView(cacheDir string, entries []string) (string, error) {
	sig, err := etcSignature(entries)
	if err != nil {
		return "", fmt.Errorf("/etc: %w", err)
	}
	dir := filepath.Join(cacheDir, sig)
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("/etc: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".new-")
	if err != nil {
		return "", fmt.Errorf("/etc: %w", err)
	}
	defer os.RemoveAll(tmp) // gone after the rename; what a failed build left
	for _, src := range entries {
		if err := copyEtcEntry(src, filepath.Join(tmp, filepath.Base(src))); err != nil {
			return "", fmt.Errorf("/etc: %w", err)
		}
	}
	for _, n := range EtcFileNames {
		if err := os.WriteFile(filepath.Join(tmp, n), nil, 0o644); err != nil {
			return "", fmt.Errorf("/etc: %w", err)
		}
		if err := os.Chmod(filepath.Join(tmp, n), 0o644); err != nil {
			return "", fmt.Errorf("/etc: %w", err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("/etc: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(dir); serr == nil {
			return dir, nil // another launcher made the same view meanwhile
		}
		return "", fmt.Errorf("/etc: %w", err)
	}
	return dir, nil
}

// RemoveStaleEtcViews removes the views under cacheDir that are not the
// current one for entries. Call it only when no job runs: a job shows its
// view for its whole life.
func RemoveStaleEtcViews(cacheDir string, entries []string) error {
	sig, err := etcSignature(entries)
	if err != nil {
		return err
	}
	des, err := os.ReadDir(cacheDir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	var errs []error
	for _, de := range des {
		if de.Name() != sig {
			errs = append(errs, os.RemoveAll(filepath.Join(cacheDir, de.Name())))
		}
	}
	return errors.Join(errs...)
}

// etcSignature names the content of the entries: a SHA-256 of every path
// under them (top-level links followed) with its mode, size, times and
// inode.
func etcSignature(entries []string) (string, error) {
	// One listing per entry, the entries' listings in parallel (a few
	// thousand lstat calls in all; the launch waits for them).
	sums := make([][]byte, len(entries))
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i, src := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sums[i], errs[i] = entrySignature(src)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	h := sha256.New()
	for _, sum := range sums {
		h.Write(sum)
	}
	fmt.Fprintf(h, "format 2 %v\n", EtcFileNames) // 2: modes set whatever the umask
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// entrySignature digests one entry's listing: where it leads, then each
// path under it with its mode, size, times and inode.
func entrySignature(src string) ([]byte, error) {
	h := sha256.New()
	real, err := filepath.EvalSymlinks(src)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(h, "%s dangling\n", src)
		return h.Sum(nil), nil
	}
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(h, "%s -> %s\n", src, real)
	var line []byte
	err = filepath.WalkDir(real, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// A link cannot change in place: a new target is a new inode.
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line = append(append(line[:0], p...), ' ')
		line = strconv.AppendUint(line, uint64(st.Mode), 8)
		for _, n := range []int64{st.Size, st.Mtim.Nano(), st.Ctim.Nano(), int64(st.Ino)} {
			line = strconv.AppendInt(append(line, ' '), n, 10)
		}
		h.Write(append(line, '\n'))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

// copyEtcEntry copies one top-level entry, following it if it is a link.
// What the job could not read on the host (not world-readable, as
// /etc/ssl/private) is not copied.
func copyEtcEntry(src, dst string) error {
	real, err := filepath.EvalSymlinks(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // a dangling link shows nothing, as a bind mount could not
	}
	if err != nil {
		return err
	}
	return filepath.WalkDir(real, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(real, p)
		to := filepath.Join(dst, rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if fi.Mode().Perm()&0o005 != 0o005 {
				return fs.SkipDir
			}
			if err := os.Mkdir(to, 0o755); err != nil {
				return err
			}
			return os.Chmod(to, 0o755) // whatever the umask
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(t, to)
		case fi.Mode().IsRegular():
			return copyEtcFile(p, to, fi)
		}
		return nil // devices, FIFOs, sockets: never copied
	})
}

// copyEtcFile copies a world-readable regular file of at most EtcMaxFile
// bytes (anything else is left out), with its mode less group and other
// write.
func copyEtcFile(src, dst string, fi fs.FileInfo) error {
	if fi.Size() > EtcMaxFile || fi.Mode().Perm()&0o004 == 0 {
		return nil
	}
	in, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := out.Chmod(fi.Mode().Perm() &^ 0o022); err != nil { // whatever the umask
		out.Close()
		return err
	}
	if _, err := io.Copy(out, io.LimitReader(in, EtcMaxFile)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
