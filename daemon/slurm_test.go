package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/launcher"
	"github.com/securetrain/securetrain/slurm"
)

// fakeSlurm answers CallerJob from a table of pids.
type fakeSlurm struct {
	jobs     map[int]slurm.JobInfo
	err      error
	asked    []int
	reported []string
}

func (f *fakeSlurm) CallerJob(_ context.Context, pid int) (slurm.JobInfo, error) {
	f.asked = append(f.asked, pid)
	if f.err != nil {
		return slurm.JobInfo{}, f.err
	}
	if ji, ok := f.jobs[pid]; ok {
		return ji, nil
	}
	return slurm.JobInfo{}, fmt.Errorf("pid %d: %w", pid, slurm.ErrNotInJob)
}

func (f *fakeSlurm) ReportUsage(_ context.Context, id uint64, text string) error {
	f.reported = append(f.reported, fmt.Sprintf("%d: %s", id, text))
	return nil
}

func slurmServer(requireJob bool, f *fakeSlurm) *Server {
	h := &configs.Host{Slurm: configs.HostSlurm{Enabled: true, RequireJob: requireJob}}
	return &Server{Launcher: &launcher.Launcher{Host: h}, Slurm: f}
}

var job7 = slurm.JobInfo{ID: 7, UID: 1001, Node: "n1", State: "RUNNING", CPUs: 2, MemoryMB: 512, GPUs: []int{5, 2}}

func TestSlurmCaller(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	f := &fakeSlurm{jobs: map[int]slurm.JobInfo{4242: job7}}
	caller := Identity{UID: 1001, PID: 4242}

	// Slurm off: nothing is asked.
	off := &Server{Launcher: &launcher.Launcher{Host: &configs.Host{}}}
	if sj, err := off.slurmCaller(context.Background(), caller, &RunArgs{}, now); sj != nil || err != nil {
		t.Errorf("slurm off: %v, %v", sj, err)
	}

	// The job comes from the peer pid; the caller's variables only produce
	// violations, one per contradiction (--env counts as well).
	args := &RunArgs{
		CallerEnv: []string{"SLURM_JOB_ID=7", "SLURM_JOB_GPUS=0,1,2", "HOME=/home/u"},
		Env:       []string{"SLURM_JOB_UID=0"},
	}
	sj, err := slurmServer(true, f).slurmCaller(context.Background(), caller, args, now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(f.asked, []int{4242}) || sj.job.ID != 7 {
		t.Errorf("asked Slurm about %v, got job %d; want pid 4242 -> job 7", f.asked, sj.job.ID)
	}
	var got []string
	for _, v := range sj.forged {
		got = append(got, slurm.ForgedName(v))
		if v.Kind != slurm.ForgedEnv || !v.Time.Equal(now) {
			t.Errorf("violation %+v: want kind %s at %v", v, slurm.ForgedEnv, now)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"SLURM_JOB_GPUS", "SLURM_JOB_UID"}) {
		t.Errorf("forged = %v, want SLURM_JOB_GPUS and SLURM_JOB_UID", got)
	}
	// Another job's id is a forgery too.
	sj, _ = slurmServer(true, f).slurmCaller(context.Background(), caller, &RunArgs{CallerEnv: []string{"SLURM_JOB_ID=8"}}, now)
	if len(sj.forged) != 1 || slurm.ForgedName(sj.forged[0]) != "SLURM_JOB_ID" {
		t.Errorf("SLURM_JOB_ID=8 in job 7: %+v", sj.forged)
	}

	// In no job: refused with require_job, a plain run without.
	stranger := Identity{UID: 1002, PID: 99}
	_, err = slurmServer(true, f).slurmCaller(context.Background(), stranger, &RunArgs{CallerEnv: []string{"SLURM_JOB_ID=7"}}, now)
	if !errors.Is(err, ErrNoSlurmJob) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "pid 99 (uid 1002) is in no running Slurm job") {
		t.Errorf("require_job, caller in no job: %v", err)
	}
	if sj, err := slurmServer(false, f).slurmCaller(context.Background(), stranger, &RunArgs{}, now); sj != nil || err != nil {
		t.Errorf("no require_job, caller in no job: %v, %v", sj, err)
	}

	// Slurm cannot say (or contradicts the process): refused either way.
	bad := &fakeSlurm{err: fmt.Errorf("pid 4242 runs as uid 1001, job 9 belongs to uid 1003: %w", slurm.ErrMismatch)}
	if _, err := slurmServer(false, bad).slurmCaller(context.Background(), caller, &RunArgs{}, now); err == nil || !strings.Contains(err.Error(), "the caller's job cannot be established") {
		t.Errorf("mismatch: %v", err)
	}
}

func TestCapToJob(t *testing.T) {
	base := configs.Profile{Name: "p"}
	base.Limits.CPUs, base.Limits.Memory, base.Limits.Shm = 8, 4<<30, 1<<30
	tests := []struct {
		name    string
		gpus    configs.GPUSet
		cpus    float64
		want    configs.GPUSet
		wantErr string
	}{
		{"none", configs.GPUSet{}, 8, configs.GPUSet{}, ""},
		{"all is the allocation", configs.GPUSet{All: true}, 8, configs.GPUSet{Indices: []int{2, 5}}, ""},
		{"sandbox numbering", configs.GPUSet{Indices: []int{1}}, 8, configs.GPUSet{Indices: []int{5}}, ""},
		{"index outside the job", configs.GPUSet{Indices: []int{2}}, 8, configs.GPUSet{}, "Slurm job 7 has 2 GPU(s) on this node, numbered 0-1 inside the job"},
		{"count", configs.GPUSet{Count: 2}, 1, configs.GPUSet{Count: 2}, ""},
		{"count too high", configs.GPUSet{Count: 3}, 8, configs.GPUSet{}, "--gpus 3: Slurm job 7 has 2 GPU(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			p.Limits.GPUs, p.Limits.CPUs = tt.gpus, tt.cpus
			q, avail, err := capToJob(&p, job7, 1)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrDenied) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(q.Limits.GPUs) != fmt.Sprint(tt.want) || !slices.Equal(avail, []int{2, 5}) {
				t.Errorf("GPUs %v avail %v, want %v from [2 5]", q.Limits.GPUs, avail, tt.want)
			}
			wantCPUs := min(tt.cpus, 2)
			if q.Limits.CPUs != wantCPUs || q.Limits.Memory != 512<<20 || q.Limits.Shm != 256<<20 {
				t.Errorf("limits cpus %v memory %d shm %d, want %v, 512 MiB, 256 MiB", q.Limits.CPUs, q.Limits.Memory, q.Limits.Shm, wantCPUs)
			}
			if p.Limits.CPUs != tt.cpus || p.Limits.Memory != 4<<30 {
				t.Errorf("capToJob changed its input: %+v", p.Limits)
			}
		})
	}
	// An allocation without GPUs leaves a GPU-less run; Slurm's unlimited
	// memory (0) leaves the profile's.
	p := base
	p.Limits.GPUs = configs.GPUSet{All: true}
	q, _, err := capToJob(&p, slurm.JobInfo{ID: 3, CPUs: 16}, 1)
	if err != nil || !q.Limits.GPUs.None() || q.Limits.Memory != 4<<30 || q.Limits.CPUs != 8 {
		t.Errorf("GPU-less, memory-unlimited job: %+v, %v", q.Limits, err)
	}
	if got := gpuMapString(job7); got != "2:0,5:1" {
		t.Errorf("gpu map %q, want 2:0,5:1", got)
	}
	if got := slurmAvail([]int{2, 5, 9}, []int{0, 1, 2, 3, 4, 5}); !slices.Equal(got, []int{2, 5}) {
		t.Errorf("slurmAvail = %v", got)
	}
}

func TestReportToSlurm(t *testing.T) {
	f := &fakeSlurm{}
	s := slurmServer(false, f)
	s.reportToSlurm(context.Background(), nil, "no job: nothing reported")
	s.reportToSlurm(context.Background(), &slurmBinding{job: job7}, "securetrain: job a exited 0")
	if !slices.Equal(f.reported, []string{"7: securetrain: job a exited 0"}) {
		t.Errorf("reported %q", f.reported)
	}
}

// TestDaemonAllocation: a caller's --allocation is its own (uid-prefixed),
// root's as given, and inside a Slurm job only that job.
func TestDaemonAllocation(t *testing.T) {
	sj := &slurmBinding{job: slurm.JobInfo{ID: 812}}
	for _, tc := range []struct {
		name  string
		id    Identity
		sj    *slurmBinding
		asked string
		want  string
		err   string
	}{
		{"none", Identity{UID: 1000}, nil, "", "", ""},
		{"user's own", Identity{UID: 1000}, nil, "exp1", "u1000-exp1", ""},
		{"root's as given", Identity{UID: 0}, nil, "exp1", "exp1", ""},
		{"the slurm job", Identity{UID: 1000}, sj, "812", "812", ""},
		{"another slurm job", Identity{UID: 1000}, sj, "813", "", "--allocation 813: inside Slurm job 812 the allocation is that job"},
	} {
		got, err := daemonAllocation(tc.id, tc.sj, tc.asked)
		if got != tc.want || (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("%s: daemonAllocation = %q, %v; want %q, %q", tc.name, got, err, tc.want, tc.err)
		}
	}
}
