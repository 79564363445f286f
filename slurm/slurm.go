package slurm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotInJob: the process belongs to no Slurm job on this node.
	ErrNotInJob = errors.New("not inside a Slurm job on this node")
	// ErrNoSuchJob: Slurm does not know the job (or it is no longer pending or running).
	ErrNoSuchJob = errors.New("no such Slurm job")
	// ErrMismatch: what Slurm says about a process contradicts the process itself
	// (another user's job, a cgroup naming another job, a pid reused meanwhile).
	ErrMismatch = errors.New("process does not match its Slurm job")
)

// JobInfo is one Slurm job's allocation as Slurm itself reports it, narrowed
// to this node where it says so.
type JobInfo struct {
	ID        uint64    `json:"id"`
	UID       int       `json:"uid"`
	GID       int       `json:"gid"`
	User      string    `json:"user"`
	State     string    `json:"state"`
	Partition string    `json:"partition"`
	NodeList  string    `json:"node_list"` // Slurm's compressed host list
	Nodes     []string  `json:"nodes"`     // every allocated node, expanded
	TotalCPUs int       `json:"total_cpus"`
	Node      string    `json:"node"`      // this node, as Slurm names it
	CPUs      int       `json:"cpus"`      // CPUs allocated on this node
	MemoryMB  int64     `json:"memory_mb"` // memory allocated on this node (0: not limited by Slurm)
	GPUs      []int     `json:"gpus"`      // host GPU indices allocated on this node
	Read      time.Time `json:"read"`      // when it was read from Slurm
}

// GPUMapping is one allocated GPU: its index on the host and the index the
// sandbox sees (allocated GPUs renumbered from 0, in host order, as
// CUDA_VISIBLE_DEVICES does under Slurm's own cgroup confinement).
type GPUMapping struct {
	Host    int `json:"host"`
	Sandbox int `json:"sandbox"`
}

// SandboxGPUs renumbers the job's GPUs on this node for the sandbox.
func (j JobInfo) SandboxGPUs() []GPUMapping {
	host := slices.Clone(j.GPUs)
	slices.Sort(host)
	host = slices.Compact(host)
	out := make([]GPUMapping, len(host))
	for i, h := range host {
		out[i] = GPUMapping{Host: h, Sandbox: i}
	}
	return out
}

// Client asks Slurm's own tools. The tools run with a fixed PATH and only
// SLURM_CONF in their environment, never the caller's.
type Client struct {
	// Bin is the directory of scontrol and squeue; empty: the first of
	// /usr/bin, /usr/local/bin, /bin that has scontrol.
	Bin string
	// Conf is slurm.conf (SLURM_CONF); empty: Slurm's compiled-in default.
	Conf string
	// NodeName is this node's Slurm name; empty: the short host name, or the
	// job's only node.
	NodeName string
	Log      *slog.Logger
	// Timeout bounds each tool call (default 30s).
	Timeout time.Duration
	// run replaces the tools in unit tests.
	run func(ctx context.Context, tool string, args ...string) ([]byte, error)
}

func (c *Client) log() *slog.Logger {
	if c.Log == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c.Log
}

func (c *Client) tool(ctx context.Context, name string, args ...string) ([]byte, error) {
	if c.run != nil {
		return c.run(ctx, name, args...)
	}
	dir := c.Bin
	if dir == "" {
		for _, d := range []string{"/usr/bin", "/usr/local/bin", "/bin"} {
			if _, err := os.Stat(filepath.Join(d, "scontrol")); err == nil {
				dir = d
				break
			}
		}
		if dir == "" {
			return nil, fmt.Errorf("slurm: scontrol not found in /usr/bin, /usr/local/bin or /bin (install slurm-client)")
		}
	}
	t := c.Timeout
	if t == 0 {
		t = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, name), args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C"}
	if c.Conf != "" {
		cmd.Env = append(cmd.Env, "SLURM_CONF="+c.Conf)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = msg[:i]
		}
		return stdout.Bytes(), &ToolError{Tool: name, Args: args, Msg: msg, Err: err}
	}
	return stdout.Bytes(), nil
}

// ToolError is a Slurm tool that failed.
type ToolError struct {
	Tool string
	Args []string
	Msg  string // its first line of stderr
	Err  error
}

func (e *ToolError) Error() string {
	s := fmt.Sprintf("slurm: %s %s: %v", e.Tool, strings.Join(e.Args, " "), e.Err)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}
func (e *ToolError) Unwrap() error { return e.Err }

// ParseJobID checks a Slurm job id (as SLURM_JOB_ID gives it).
func ParseJobID(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 || s != strconv.FormatUint(n, 10) {
		return 0, fmt.Errorf("slurm job id %q: want a positive decimal number", s)
	}
	return n, nil
}

// Job reads job id's allocation from slurmctld (squeue --json, whose fields a
// job's user cannot forge by choosing a job name or comment).
func (c *Client) Job(ctx context.Context, id uint64) (JobInfo, error) {
	out, err := c.tool(ctx, "squeue", "--json", "--jobs", strconv.FormatUint(id, 10))
	if err != nil {
		var te *ToolError
		if errors.As(err, &te) && strings.Contains(te.Msg, "Invalid job id") {
			return JobInfo{}, fmt.Errorf("job %d: %w", id, ErrNoSuchJob)
		}
		return JobInfo{}, err
	}
	return parseSqueue(out, id, c.nodeName())
}

func (c *Client) nodeName() string {
	if c.NodeName != "" {
		return c.NodeName
	}
	h, _ := os.Hostname()
	h, _, _ = strings.Cut(h, ".")
	return h
}

// num reads a JSON number that newer Slurm versions wrap as {"set":..,"number":..}.
type num struct {
	V   float64
	Set bool
}

func (n *num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) > 0 && b[0] == '{' {
		var w struct {
			Set      bool    `json:"set"`
			Infinite bool    `json:"infinite"`
			Number   float64 `json:"number"`
		}
		if err := json.Unmarshal(b, &w); err != nil {
			return err
		}
		n.V, n.Set = w.Number, w.Set && !w.Infinite
		return nil
	}
	if err := json.Unmarshal(b, &n.V); err != nil {
		return err
	}
	n.Set = true
	return nil
}

// state reads job_state, a string (22.05) or a list of strings (23.02+).
type state string

func (s *state) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '[' {
		var l []string
		if err := json.Unmarshal(b, &l); err != nil {
			return err
		}
		*s = state(strings.Join(l, ","))
		return nil
	}
	var v string
	err := json.Unmarshal(b, &v)
	*s = state(v)
	return err
}

type squeueOut struct {
	Jobs []struct {
		JobID         num      `json:"job_id"`
		UserID        num      `json:"user_id"`
		GroupID       num      `json:"group_id"`
		UserName      string   `json:"user_name"`
		JobState      state    `json:"job_state"`
		Partition     string   `json:"partition"`
		Nodes         string   `json:"nodes"`
		CPUs          num      `json:"cpus"`
		NodeCount     num      `json:"node_count"`
		MemoryPerNode num      `json:"memory_per_node"`
		MemoryPerCPU  num      `json:"memory_per_cpu"`
		GresDetail    []string `json:"gres_detail"`
		JobResources  struct {
			AllocatedCores num `json:"allocated_cores"`
			AllocatedNodes []struct {
				Nodename        string                                    `json:"nodename"`
				MemoryAllocated num                                       `json:"memory_allocated"`
				Sockets         map[string]struct{ Cores map[string]any } `json:"sockets"`
			} `json:"allocated_nodes"`
		} `json:"job_resources"`
	} `json:"jobs"`
}

func parseSqueue(b []byte, id uint64, node string) (JobInfo, error) {
	var out squeueOut
	if err := json.Unmarshal(b, &out); err != nil {
		return JobInfo{}, fmt.Errorf("slurm: squeue --json for job %d: %w", id, err)
	}
	for _, j := range out.Jobs {
		if uint64(j.JobID.V) != id {
			continue
		}
		if !j.UserID.Set {
			return JobInfo{}, fmt.Errorf("slurm: job %d: squeue names no user_id", id)
		}
		ji := JobInfo{
			ID: id, UID: int(j.UserID.V), GID: int(j.GroupID.V), User: j.UserName,
			State: string(j.JobState), Partition: j.Partition, NodeList: j.Nodes,
			TotalCPUs: int(j.CPUs.V), Read: time.Now().UTC(),
		}
		alloc := j.JobResources.AllocatedNodes
		for _, n := range alloc {
			ji.Nodes = append(ji.Nodes, n.Nodename)
		}
		i := slices.Index(ji.Nodes, node)
		if i < 0 && len(ji.Nodes) == 1 {
			i = 0 // the job's only node is this one under another name
		}
		if i < 0 {
			// Not (yet) allocated here: totals only.
			return ji, nil
		}
		ji.Node = ji.Nodes[i]
		n := alloc[i]
		cores := 0
		for _, s := range n.Sockets {
			cores += len(s.Cores)
		}
		switch {
		case len(alloc) == 1:
			ji.CPUs = ji.TotalCPUs
		case j.JobResources.AllocatedCores.V > 0:
			ji.CPUs = int(float64(cores) * j.CPUs.V / j.JobResources.AllocatedCores.V)
		default:
			ji.CPUs = cores
		}
		switch {
		case n.MemoryAllocated.Set && n.MemoryAllocated.V > 0:
			ji.MemoryMB = int64(n.MemoryAllocated.V)
		case j.MemoryPerNode.Set && j.MemoryPerNode.V > 0:
			ji.MemoryMB = int64(j.MemoryPerNode.V)
		case j.MemoryPerCPU.Set && j.MemoryPerCPU.V > 0:
			ji.MemoryMB = int64(j.MemoryPerCPU.V) * int64(ji.CPUs)
		}
		if i < len(j.GresDetail) {
			g, err := ParseGresIndices(j.GresDetail[i])
			if err != nil {
				return JobInfo{}, fmt.Errorf("slurm: job %d: %w", id, err)
			}
			ji.GPUs = g
		}
		return ji, nil
	}
	return JobInfo{}, fmt.Errorf("job %d: %w", id, ErrNoSuchJob)
}

var gresIdx = regexp.MustCompile(`^gpu(?::[^:(]+)?(?::(\d+))?\(IDX:([0-9,\-]*|N/A)\)$`)

// ParseGresIndices reads the GPU indices of one node's GRES detail, such as
// "gpu:2(IDX:0-1)", "gpu:a100:2(IDX:0,3)" or "gpu:a100:1(IDX:2),nic:1(IDX:0)".
// Other GRES are ignored.
func ParseGresIndices(s string) ([]int, error) {
	var out []int
	for _, part := range splitGres(s) {
		if !strings.HasPrefix(part, "gpu") {
			continue
		}
		m := gresIdx.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("GRES %q: want gpu[:TYPE][:N](IDX:LIST)", part)
		}
		if m[2] == "N/A" || m[2] == "" {
			continue
		}
		for _, r := range strings.Split(m[2], ",") {
			lo, hi, isRange := strings.Cut(r, "-")
			a, err := strconv.Atoi(lo)
			if err != nil || a < 0 {
				return nil, fmt.Errorf("GRES %q: bad index %q", part, r)
			}
			b := a
			if isRange {
				if b, err = strconv.Atoi(hi); err != nil || b < a || b-a > 1024 {
					return nil, fmt.Errorf("GRES %q: bad range %q", part, r)
				}
			}
			for k := a; k <= b; k++ {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// splitGres splits at commas outside parentheses.
func splitGres(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if t := strings.TrimSpace(s[start:]); t != "" {
		out = append(out, t)
	}
	return out
}

var pidinfoRe = regexp.MustCompile(`(?m)^Slurm (?:JobId=|job id )(\d+) `)

// JobOfPID asks the local slurmd (scontrol pidinfo) which job the process
// belongs to. slurmd answers from its own process tracking (the job's
// process tree or cgroup), not from anything the process says.
func (c *Client) JobOfPID(ctx context.Context, pid int) (uint64, error) {
	if pid <= 1 {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNotInJob)
	}
	out, err := c.tool(ctx, "scontrol", "pidinfo", strconv.Itoa(pid))
	if err != nil {
		var te *ToolError
		if errors.As(err, &te) {
			return 0, fmt.Errorf("pid %d: %w (%s)", pid, ErrNotInJob, te.Msg)
		}
		return 0, err
	}
	m := pidinfoRe.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("pid %d: %w (scontrol pidinfo said %q)", pid, ErrNotInJob, strings.TrimSpace(string(out)))
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}

var cgroupJobRe = regexp.MustCompile(`/job_(\d+)(?:/|$)`)

// parseCgroupJob reads the job of a Slurm cgroup path in /proc/PID/cgroup.
func parseCgroupJob(s string) (uint64, bool) {
	for _, l := range strings.Split(s, "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 || !strings.Contains(parts[2], "slurm") {
			continue
		}
		if m := cgroupJobRe.FindStringSubmatch(parts[2]); m != nil {
			n, err := strconv.ParseUint(m[1], 10, 64)
			if err == nil {
				return n, true
			}
		}
	}
	return 0, false
}

// jobCgroupDirs returns, for each hierarchy in a /proc/PID/cgroup text where
// the process sits in a Slurm job cgroup, that job cgroup's directory under
// root (cgroup v1: root/CONTROLLER/slurm.../uid_U/job_J; v2: root/.../job_J).
func jobCgroupDirs(s, root string, id uint64) []string {
	var out []string
	suffix := "/job_" + strconv.FormatUint(id, 10)
	for _, l := range strings.Split(s, "\n") {
		parts := strings.SplitN(l, ":", 3)
		if len(parts) != 3 || !strings.Contains(parts[2], "slurm") {
			continue
		}
		p := parts[2]
		i := strings.Index(p+"/", suffix+"/")
		if i < 0 {
			continue
		}
		ctl := parts[1]
		if ctl == "" {
			out = append(out, filepath.Join(root, p[:i+len(suffix)]))
			continue
		}
		ctl = strings.TrimPrefix(ctl, "name=")
		out = append(out, filepath.Join(root, strings.Split(ctl, ",")[0], p[:i+len(suffix)]))
	}
	return out
}
