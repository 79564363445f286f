package secrets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// mountTmpfs creates dir (its parent must exist) and mounts a small private
// tmpfs on it, owned by uid:gid with mode 0500: secret files never touch a
// disk, whatever filesystem /run is on here.
func mountTmpfs(dir string, uid, gid int) error {
	if err := os.Mkdir(dir, 0o500); err != nil {
		return fmt.Errorf("secrets dir %s: %w", dir, err)
	}
	opts := fmt.Sprintf("mode=0500,uid=%d,gid=%d,size=4m,nr_inodes=1024", uid, gid)
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, opts); err != nil {
		_ = os.Remove(dir)
		return fmt.Errorf("secrets dir %s: mount tmpfs (needs root): %w", dir, err)
	}
	return nil
}

// removeTmpfs unmounts and removes dir; a dir that is gone or not mounted is
// clean.
func removeTmpfs(dir string) error {
	var errs []error
	for {
		err := unix.Unmount(dir, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
		if err == nil {
			continue // stacked mounts: unmount them all
		}
		if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount secrets dir %s: %w", dir, err))
		}
		break
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("remove secrets dir %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// writeSecretFile writes data to dir/rel with mode 0400 owned by uid:gid,
// creating parent directories (0500, same owner). It never follows symlinks
// and never overwrites.
func writeSecretFile(dir, rel string, data []byte, uid, gid int) error {
	if rel == "" || strings.HasPrefix(rel, "/") || filepath.Clean(rel) != rel || strings.HasPrefix(rel, "..") {
		return fmt.Errorf("%w: secret file %q is not a clean relative path", ErrConfig, rel)
	}
	cur := dir
	parts := strings.Split(rel, "/")
	for _, p := range parts[:len(parts)-1] {
		cur = filepath.Join(cur, p)
		if err := unix.Mkdir(cur, 0o500); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("secret dir %s: %w", cur, err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(cur, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("secret dir %s: not a directory", cur)
		}
		if err := unix.Lchown(cur, uid, gid); err != nil {
			return fmt.Errorf("secret dir %s: chown %d:%d: %w", cur, uid, gid, err)
		}
	}
	name := filepath.Join(dir, rel)
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o400)
	if err != nil {
		return fmt.Errorf("secret file %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	if err := f.Chown(uid, gid); err != nil {
		return fmt.Errorf("secret file %s: chown %d:%d: %w", name, uid, gid, err)
	}
	if err := f.Chmod(0o400); err != nil {
		return fmt.Errorf("secret file %s: chmod: %w", name, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("secret file %s: write failed", name) // the error could not carry the value, but stay terse
	}
	return f.Close()
}
