package pin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// cacheKey identifies a file's state. ctime cannot be set by the file's
// owner, so a user cannot make a changed file look like a cached one; the
// path keeps one file's entry from answering for another.
type cacheKey struct {
	FileState
	Path string
}

// Cache remembers digests of verified files so that a re-run over unchanged
// inputs costs a stat per file. It lives in a directory that must be owned by
// the verifying user (root, for the launcher) and not be writable by group or
// others, nor may its parents be (unless sticky); a user who could write it
// could make any content "verified". Safe for concurrent use; Save merges
// with entries written by other processes under a lock file.
type Cache struct {
	dir   string
	mu    sync.Mutex
	m     map[cacheKey]Digest
	added map[cacheKey]Digest
}

const (
	cacheFile   = "verified-v1"
	cacheLock   = "lock"
	cacheHeader = "securetrain pin cache v1"
	maxCacheLen = 1 << 30
)

// OpenCache opens (creating with mode 0700 if absent) the cache directory.
// It refuses a directory or file that is a symlink, not owned by the current
// effective user, or writable by group or others.
func OpenCache(dir string) (*Cache, error) {
	if !filepath.IsAbs(dir) {
		return nil, fmt.Errorf("%w: %s: path must be absolute", ErrBadCache, dir)
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadCache, dir, err)
	}
	if err := checkTrusted(dir, true); err != nil {
		return nil, err
	}
	for p := filepath.Dir(dir); ; p = filepath.Dir(p) {
		if err := checkParent(p); err != nil {
			return nil, err
		}
		if p == "/" {
			break
		}
	}
	c := &Cache{dir: dir, m: map[cacheKey]Digest{}, added: map[cacheKey]Digest{}}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

func checkTrusted(p string, wantDir bool) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadCache, p, err)
	}
	typ := st.Mode & unix.S_IFMT
	switch {
	case wantDir && typ != unix.S_IFDIR, !wantDir && typ != unix.S_IFREG:
		return fmt.Errorf("%w: %s: not a plain %s (symlinks are refused)", ErrBadCache, p, map[bool]string{true: "directory", false: "file"}[wantDir])
	case int(st.Uid) != os.Geteuid():
		return fmt.Errorf("%w: %s: owned by uid %d, must be owned by uid %d (root for the launcher)", ErrBadCache, p, st.Uid, os.Geteuid())
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%w: %s: mode %04o is group/world-writable, must be 0700 (directory) or 0600 (file)", ErrBadCache, p, st.Mode&0o7777)
	}
	return nil
}

func checkParent(p string) error {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadCache, p, err)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: parent %s is owned by uid %d, must be root's", ErrBadCache, p, st.Uid)
	}
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("%w: parent %s is group/world-writable without the sticky bit", ErrBadCache, p)
	}
	return nil
}

func (c *Cache) load() error {
	p := filepath.Join(c.dir, cacheFile)
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadCache, p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if err := checkTrusted(p, false); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size > maxCacheLen {
		return fmt.Errorf("%w: %s: unreadable or larger than %d bytes", ErrBadCache, p, maxCacheLen)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	first := true
	for sc.Scan() {
		if first {
			if sc.Text() != cacheHeader {
				return fmt.Errorf("%w: %s: unknown format", ErrBadCache, p)
			}
			first = false
			continue
		}
		k, d, err := parseCacheLine(sc.Text())
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadCache, p, err)
		}
		c.m[k] = d
	}
	return sc.Err()
}

func parseCacheLine(s string) (cacheKey, Digest, error) {
	var k cacheKey
	f := strings.SplitN(s, " ", 7)
	if len(f) != 7 {
		return k, Digest{}, errors.New("bad line")
	}
	var err error
	var errs []error
	u := func(s string) uint64 { v, e := strconv.ParseUint(s, 10, 64); errs = append(errs, e); return v }
	i := func(s string) int64 { v, e := strconv.ParseInt(s, 10, 64); errs = append(errs, e); return v }
	k.Dev, k.Ino, k.Size, k.Mtime, k.Ctime = u(f[0]), u(f[1]), i(f[2]), i(f[3]), i(f[4])
	d, e := ParseDigest(f[5])
	errs = append(errs, e)
	k.Path, err = strconv.Unquote(f[6])
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		return k, d, err
	}
	return k, d, nil
}

func (c *Cache) lookup(k cacheKey) (Digest, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.m[k]
	return d, ok
}

func (c *Cache) add(k cacheKey, d Digest) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m[k] = d
	c.added[k] = d
}

// Len returns the number of cached entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// Save writes new entries, merged with what other processes saved since we
// loaded, atomically (temp file, fsync, rename) under an exclusive flock.
// Entries for the same path with an older state are dropped.
func (c *Cache) Save() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.added) == 0 {
		return nil
	}
	lp := filepath.Join(c.dir, cacheLock)
	lfd, err := unix.Open(lp, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("cache lock %s: %w", lp, err)
	}
	defer unix.Close(lfd)
	if err := unix.Flock(lfd, unix.LOCK_EX); err != nil {
		return fmt.Errorf("cache lock %s: %w", lp, err)
	}
	defer unix.Flock(lfd, unix.LOCK_UN)
	fresh := &Cache{dir: c.dir, m: map[cacheKey]Digest{}}
	if err := fresh.load(); err != nil {
		return err
	}
	for k, d := range c.added {
		fresh.m[k] = d
	}
	latest := map[string]cacheKey{}
	for k := range fresh.m {
		if o, ok := latest[k.Path]; !ok || k.Ctime > o.Ctime || (k.Ctime == o.Ctime && k.Ino > o.Ino) {
			latest[k.Path] = k
		}
	}
	var buf bytes.Buffer
	buf.WriteString(cacheHeader + "\n")
	for _, k := range latest {
		fmt.Fprintf(&buf, "%d %d %d %d %d %s %s\n", k.Dev, k.Ino, k.Size, k.Mtime, k.Ctime, fresh.m[k], strconv.Quote(k.Path))
	}
	tmp, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("cache %s: %w", c.dir, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("cache %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("cache %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(c.dir, cacheFile)); err != nil {
		return fmt.Errorf("cache %s: %w", c.dir, err)
	}
	for k, d := range fresh.m {
		if latest[k.Path] == k {
			c.m[k] = d
		}
	}
	clear(c.added)
	return nil
}
