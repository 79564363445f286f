package launcher

import (
	"strings"
	"time"
)

// StatusDead is ps's status of a job whose launcher died (gc removes it).
const StatusDead = "dead (gc)"

// JobRow is one line of ps, the same for a root caller (in process) and
// for a caller of the daemon (which sends the rows).
type JobRow struct {
	ID      string    `json:"id"`
	User    string    `json:"user"`
	UID     int       `json:"uid"`
	Status  string    `json:"status"` // StatusDead when no launcher holds it
	Live    bool      `json:"live"`
	Created time.Time `json:"created"`
	// Usage is the last live sample of a live job; nil when there is none.
	Usage *RowUsage `json:"usage,omitempty"`
	// NetAddr and Allocation are the job's address and distributed job
	// (JobState's fields of the same names).
	NetAddr    string   `json:"net_addr,omitempty"`
	Allocation string   `json:"allocation,omitempty"`
	Profile    string   `json:"profile"`
	Command    []string `json:"command"`
}

// RowUsage is what ps shows of a live job's usage.
type RowUsage struct {
	CPUSeconds float64 `json:"cpu_seconds"` // the job's, without gVisor's own
	MemBytes   uint64  `json:"mem_bytes"`
	// GPUs is the number of GPUs sampled (-1: GPUs not sampled), GPUMem
	// the job's memory on them.
	GPUs   int    `json:"gpus"`
	GPUMem uint64 `json:"gpu_mem_bytes,omitempty"`
}

// Jobs lists the jobs v may see (JobState.UID): live ones, and with all
// those whose launcher died as well.
func (l *Launcher) Jobs(v Viewer, all bool) ([]JobRow, error) {
	jobs, err := l.Store().List()
	if err != nil {
		return nil, err
	}
	var rows []JobRow
	for _, j := range jobs {
		if !v.Sees(j.UID) || (!j.Live && !all) || j.Status == StatusWarm {
			continue
		}
		rows = append(rows, l.jobRow(j))
	}
	return rows, nil
}

func (l *Launcher) jobRow(j JobState) JobRow {
	r := JobRow{ID: j.ID, User: j.User, UID: j.UID, Status: j.Status, Live: j.Live, Created: j.Created,
		NetAddr: j.NetAddr, Allocation: j.Allocation, Profile: j.Profile, Command: j.Command}
	if !j.Live {
		r.Status = StatusDead
		return r
	}
	if u, ok := l.Store().LiveUsage(j.ID); ok {
		ru := &RowUsage{CPUSeconds: u.JobCPU(), MemBytes: u.MemUsage, GPUs: -1}
		if u.GPUs != nil {
			ru.GPUs = len(u.GPUs)
			for _, g := range u.GPUs {
				ru.GPUMem += g.JobMem()
			}
		}
		r.Usage = ru
	}
	return r
}

// Net is ps's NET column: the job's address and, for a job of an
// allocation, "@ID" ("10.213.0.22@1234"); "-" without a network.
func (r JobRow) Net() string {
	if r.NetAddr == "" {
		return "-"
	}
	if r.Allocation != "" {
		return r.NetAddr + "@" + r.Allocation
	}
	return r.NetAddr
}

// ProfileName is the profile as ps shows it (a built-in one by its name).
func (r JobRow) ProfileName() string { return strings.TrimPrefix(r.Profile, "builtin:") }

// CommandLine is the job's command on one line: newlines escaped, tabs as
// spaces.
func (r JobRow) CommandLine() string {
	return strings.NewReplacer("\n", "\\n", "\t", " ").Replace(strings.Join(r.Command, " "))
}
