package usage

import (
	"os"

	"github.com/prometheus/procfs"
)

// procKey identifies a process across pid reuse.
type procKey struct {
	pid   int
	start uint64
}

type procIO struct{ r, w uint64 }

// hostProcs sums the sandbox's host processes (sentry, gofer, stubs) from
// /proc. I/O counters of processes that exited are kept, so the totals never
// go back.
type hostProcs struct {
	fs   procfs.FS
	page uint64
	last map[procKey]procIO
	gone procIO
}

func newHostProcs(procRoot string) (*hostProcs, error) {
	if procRoot == "" {
		procRoot = procfs.DefaultMountPoint
	}
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	return &hostProcs{fs: fs, page: uint64(os.Getpagesize()), last: map[procKey]procIO{}}, nil
}

// read returns the number of processes read, their summed RSS and the
// cumulative I/O bytes. A process that vanished between the cgroup read and
// this one is skipped.
func (h *hostProcs) read(pids []int) (n int, rss, rd, wr uint64) {
	seen := make(map[procKey]procIO, len(pids))
	for _, pid := range pids {
		p, err := h.fs.Proc(pid)
		if err != nil {
			continue
		}
		st, err := p.Stat()
		if err != nil {
			continue
		}
		n++
		rss += uint64(st.RSS) * h.page
		k := procKey{pid, st.Starttime}
		cur := h.last[k]
		if io, err := p.IO(); err == nil {
			cur = procIO{io.RChar, io.WChar}
		}
		seen[k] = cur
	}
	for k, v := range h.last {
		if _, ok := seen[k]; !ok {
			h.gone.r += v.r
			h.gone.w += v.w
		}
	}
	h.last = seen
	rd, wr = h.gone.r, h.gone.w
	for _, v := range seen {
		rd += v.r
		wr += v.w
	}
	return n, rss, rd, wr
}
