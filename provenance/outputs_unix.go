//go:build unix

package provenance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/pin"
)

// maxOutputDepth and maxOutputFiles bound what a hostile job can make the
// launcher walk.
const (
	maxOutputDepth = 64
	maxOutputFiles = 1 << 20
)

// ErrOutputs is returned when the outputs cannot be walked at all.
var ErrOutputs = errors.New("outputs")

type outFile struct {
	parent *os.File
	name   string
	rel    string
}

// HashOutputs hashes every regular file under dir. Directories are opened
// by fd with O_NOFOLLOW; a symlink, FIFO, socket or device is listed in
// skipped and never opened; a regular file is opened with
// O_NOFOLLOW|O_NONBLOCK and checked again with fstat, so a file swapped for
// a FIFO after the listing cannot block us.
func HashOutputs(ctx context.Context, dir string) ([]pin.Entry, []Skipped, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: open %s: %w", ErrOutputs, dir, err)
	}
	root := os.NewFile(uintptr(fd), dir)
	var files []outFile
	var skipped []Skipped
	var opened []*os.File
	defer func() {
		for _, f := range opened {
			f.Close()
		}
		root.Close()
	}()
	var walk func(d *os.File, rel string, depth int) error
	walk = func(d *os.File, rel string, depth int) error {
		if depth > maxOutputDepth {
			return fmt.Errorf("%w: %s: deeper than %d directories", ErrOutputs, filepath.Join(dir, rel), maxOutputDepth)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ents, err := d.ReadDir(-1)
		if err != nil {
			return fmt.Errorf("%w: read %s: %w", ErrOutputs, filepath.Join(dir, rel), err)
		}
		for _, e := range ents {
			r := filepath.ToSlash(filepath.Join(rel, e.Name()))
			t := e.Type()
			switch {
			case t.IsDir():
				sfd, err := unix.Openat(int(d.Fd()), e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
				if err != nil {
					skipped = append(skipped, Skipped{Path: r, Why: "directory not opened: " + err.Error()})
					continue
				}
				sub := os.NewFile(uintptr(sfd), r)
				opened = append(opened, sub)
				if err := walk(sub, r, depth+1); err != nil {
					return err
				}
			case t.IsRegular():
				if len(files) >= maxOutputFiles {
					return fmt.Errorf("%w: more than %d files in %s", ErrOutputs, maxOutputFiles, dir)
				}
				files = append(files, outFile{parent: d, name: e.Name(), rel: r})
			default:
				skipped = append(skipped, Skipped{Path: r, Why: "not a regular file (" + t.String() + ")"})
			}
		}
		return nil
	}
	if err := walk(root, "", 0); err != nil {
		return nil, nil, err
	}
	entries := make([]pin.Entry, len(files))
	ok := make([]bool, len(files))
	var mu sync.Mutex
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				d, why := hashOutput(ctx, files[i])
				if why != "" {
					mu.Lock()
					skipped = append(skipped, Skipped{Path: files[i].rel, Why: why})
					mu.Unlock()
					continue
				}
				entries[i] = pin.Entry{Path: files[i].rel, Digest: d}
				ok[i] = true
			}
		}()
	}
	for i := range files {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	out := entries[:0]
	for i, e := range entries {
		if ok[i] {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	sort.Slice(skipped, func(i, j int) bool { return skipped[i].Path < skipped[j].Path })
	return out, skipped, nil
}

func hashOutput(ctx context.Context, f outFile) (pin.Digest, string) {
	fd, err := unix.Openat(int(f.parent.Fd()), f.name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return pin.Digest{}, "not opened: " + err.Error()
	}
	file := os.NewFile(uintptr(fd), f.rel)
	defer file.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return pin.Digest{}, "not a regular file when opened"
	}
	d, err := pin.HashFile(ctx, file)
	if err != nil {
		return pin.Digest{}, "read failed: " + err.Error()
	}
	return d, ""
}
