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

// procAcc is what is kept of one process.
type procAcc struct {
	r, w   uint64
	gvisor bool    // sentry or gofer (else a systrap stub: the job's code)
	cpu    float64 // seconds, kept for sentry and gofer only
}

// hostProcs sums the sandbox's host processes (sentry, gofer, stubs) from
// /proc. I/O counters of processes that exited are kept, so the totals never
// go back.
type hostProcs struct {
	fs   procfs.FS
	page uint64
	last map[procKey]procAcc
	gone procAcc
	hz   float64
}

func newHostProcs(procRoot string) (*hostProcs, error) {
	if procRoot == "" {
		procRoot = procfs.DefaultMountPoint
	}
	fs, err := procfs.NewFS(procRoot)
	if err != nil {
		return nil, err
	}
	return &hostProcs{fs: fs, page: uint64(os.Getpagesize()), last: map[procKey]procAcc{}, hz: userHZ}, nil
}

// isGVisor tells gVisor's own processes by their argv[0]: runsc names them
// runsc-sandbox (the sentry) and runsc-gofer; systrap stubs, where the job's
// code runs, have an empty command line.
func isGVisor(p procfs.Proc) bool {
	cl, err := p.CmdLine()
	if err != nil || len(cl) == 0 {
		return false
	}
	return cl[0] == "runsc-sandbox" || cl[0] == "runsc-gofer"
}

// procFigures is what read returns.
type procFigures struct {
	n         int
	rss       uint64
	rd, wr    uint64
	gvisorCPU float64
}

// read sums the processes: their number, summed RSS, cumulative I/O bytes
// and the CPU seconds of gVisor's own processes (sentry and gofer). A
// process that vanished between the cgroup read and this one is skipped;
// the figures of processes that exited are kept, so totals never go back.
func (h *hostProcs) read(pids []int) procFigures {
	var f procFigures
	seen := make(map[procKey]procAcc, len(pids))
	for _, pid := range pids {
		p, err := h.fs.Proc(pid)
		if err != nil {
			continue
		}
		st, err := p.Stat()
		if err != nil {
			continue
		}
		f.n++
		f.rss += uint64(st.RSS) * h.page
		k := procKey{pid, st.Starttime}
		cur, known := h.last[k]
		if !known {
			cur.gvisor = isGVisor(p)
		}
		if io, err := p.IO(); err == nil {
			cur.r, cur.w = io.RChar, io.WChar
		}
		if cur.gvisor {
			cur.cpu = float64(st.UTime+st.STime) / h.hz
		}
		seen[k] = cur
	}
	for k, v := range h.last {
		if _, ok := seen[k]; !ok {
			h.gone.r += v.r
			h.gone.w += v.w
			h.gone.cpu += v.cpu
		}
	}
	h.last = seen
	f.rd, f.wr, f.gvisorCPU = h.gone.r, h.gone.w, h.gone.cpu
	for _, v := range seen {
		f.rd += v.r
		f.wr += v.w
		f.gvisorCPU += v.cpu
	}
	return f
}
