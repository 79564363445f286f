package scan

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
)

// ScanTree scans every file under root (a model directory) and returns one
// report per file, sorted by path. A symlink is scanned only when it
// resolves inside root; one that leaves it, and any FIFO, socket or device,
// is reported as Malformed without being opened.
func ScanTree(ctx context.Context, root string) ([]*Report, error) {
	var out []*Report
	rootReal, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t := d.Type()
		switch {
		case d.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			real, err := filepath.EvalSymlinks(p)
			if err != nil || !(real == rootReal || strings.HasPrefix(real, rootReal+string(filepath.Separator))) {
				r := &Report{Path: p, Format: "symlink"}
				r.add(Finding{Verdict: Malformed, Detail: "symlink that leaves the directory (or dangles): not followed"})
				out = append(out, r)
				return nil
			}
		case !t.IsRegular():
			r := &Report{Path: p, Format: "special"}
			r.add(Finding{Verdict: Malformed, Detail: "not a regular file (" + t.String() + "): not opened"})
			out = append(out, r)
			return nil
		}
		r, err := Scan(p)
		if err != nil {
			r = &Report{Path: p, Format: "unreadable"}
			r.add(Finding{Verdict: Malformed, Detail: err.Error()})
		}
		out = append(out, r)
		return nil
	})
	return out, err
}
