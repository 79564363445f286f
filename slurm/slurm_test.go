package slurm

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/securetrain/securetrain/violation"
)

// A two-node GPU job as squeue --json (Slurm 22.05) reports it, trimmed. The
// job name and comment try to smuggle fields in; JSON keeps them where they are.
const squeueTwoNodes = `{"meta":{},"errors":[],"jobs":[
 {"job_id":7,"name":"x UserId=root(0) gres_detail","comment":"\"user_id\":0","user_id":1001,"group_id":1002,"user_name":"alice",
  "job_state":"RUNNING","partition":"gpu","nodes":"gpu[1-2]","cpus":6,"node_count":2,
  "memory_per_node":4096,"memory_per_cpu":null,
  "gres_detail":["gpu:a100:2(IDX:1,3)","gpu:a100:1(IDX:0)"],
  "job_resources":{"nodes":"gpu[1-2]","allocated_cores":6,"allocated_hosts":2,"allocated_nodes":[
   {"sockets":{"0":{"cores":{"0":"allocated","1":"allocated"}},"1":{"cores":{"0":"allocated","1":"allocated"}}},"nodename":"gpu1","memory_allocated":4096},
   {"sockets":{"0":{"cores":{"3":"allocated","4":"allocated"}}},"nodename":"gpu2","memory_allocated":4096}]}}]}`

func TestParseSqueue(t *testing.T) {
	ji, err := parseSqueue([]byte(squeueTwoNodes), 7, "gpu1")
	if err != nil {
		t.Fatal(err)
	}
	ji.Read = ji.Read.UTC().Truncate(0)
	want := JobInfo{ID: 7, UID: 1001, GID: 1002, User: "alice", State: "RUNNING", Partition: "gpu",
		NodeList: "gpu[1-2]", Nodes: []string{"gpu1", "gpu2"}, TotalCPUs: 6, Node: "gpu1", CPUs: 4,
		MemoryMB: 4096, GPUs: []int{1, 3}, Read: ji.Read}
	if !reflect.DeepEqual(ji, want) {
		t.Errorf("gpu1:\n got %+v\nwant %+v", ji, want)
	}
	if got := ji.SandboxGPUs(); !reflect.DeepEqual(got, []GPUMapping{{1, 0}, {3, 1}}) {
		t.Errorf("SandboxGPUs = %v, want host 1→0, 3→1", got)
	}
	ji, err = parseSqueue([]byte(squeueTwoNodes), 7, "gpu2")
	if err != nil {
		t.Fatal(err)
	}
	if ji.CPUs != 2 || !reflect.DeepEqual(ji.GPUs, []int{0}) || ji.Node != "gpu2" {
		t.Errorf("gpu2: cpus %d gpus %v node %q, want 2 [0] gpu2", ji.CPUs, ji.GPUs, ji.Node)
	}
	// Not allocated here: totals only, no node.
	ji, err = parseSqueue([]byte(squeueTwoNodes), 7, "cpu9")
	if err != nil || ji.Node != "" || ji.CPUs != 0 || ji.GPUs != nil {
		t.Errorf("other node: %+v, %v; want no local allocation", ji, err)
	}
	if _, err := parseSqueue([]byte(squeueTwoNodes), 8, "gpu1"); !errors.Is(err, ErrNoSuchJob) {
		t.Errorf("job 8: %v, want ErrNoSuchJob", err)
	}
}

// Slurm 23.02+ wraps numbers and lists states.
func TestParseSqueueNewerFormat(t *testing.T) {
	const js = `{"jobs":[{"job_id":3,"user_id":1001,"group_id":1001,"user_name":"bob","job_state":["RUNNING"],
	 "nodes":"n1","cpus":{"set":true,"infinite":false,"number":2},"memory_per_node":{"set":true,"number":512},
	 "memory_per_cpu":{"set":false,"number":0},"gres_detail":[]}]}`
	ji, err := parseSqueue([]byte(js), 3, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if ji.State != "RUNNING" || ji.TotalCPUs != 2 || ji.UID != 1001 {
		t.Errorf("got %+v", ji)
	}
}

func TestParseGresIndices(t *testing.T) {
	for in, want := range map[string][]int{
		"gpu:2(IDX:0-1)":                  {0, 1},
		"gpu:a100:3(IDX:0,2-3)":           {0, 2, 3},
		"gpu:a100:1(IDX:2),nic:1(IDX:0)":  {2},
		"gpu(IDX:5)":                      {5},
		"gpu:0(IDX:N/A)":                  nil,
		"":                                nil,
		"gpu:a:1(IDX:1),gpu:b:1(IDX:0-1)": {0, 1},
	} {
		got, err := ParseGresIndices(in)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("ParseGresIndices(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"gpu:2(IDX:1-0)", "gpu:2(IDX:x)", "gpu:2", "gpu:1(IDX:0-99999)"} {
		if _, err := ParseGresIndices(in); err == nil {
			t.Errorf("ParseGresIndices(%q): no error", in)
		}
	}
}

func TestJobOfPIDParses(t *testing.T) {
	for out, want := range map[string]uint64{
		"Slurm JobId=42 ends at Thu Nov 25 20:58:29 2027\nJob remaining time is 5 seconds\n": 42,
		"Slurm job id 9 ends at Thu Nov 25 20:58:29 2027\n":                                  9,
	} {
		c := &Client{run: func(context.Context, string, ...string) ([]byte, error) { return []byte(out), nil }}
		got, err := c.JobOfPID(context.Background(), 1234)
		if err != nil || got != want {
			t.Errorf("%q: %d, %v; want %d", out, got, err, want)
		}
	}
	c := &Client{run: func(_ context.Context, tool string, args ...string) ([]byte, error) {
		return nil, &ToolError{Tool: tool, Args: args, Msg: "Failed to locate job for requested pid", Err: errors.New("exit status 1")}
	}}
	if _, err := c.JobOfPID(context.Background(), 1234); !errors.Is(err, ErrNotInJob) {
		t.Errorf("pidinfo failure: %v, want ErrNotInJob", err)
	}
}

func TestParseCgroupJob(t *testing.T) {
	id, ok := parseCgroupJob("5:freezer:/slurm/uid_1001/job_17/step_batch\n4:memory:/\n")
	if !ok || id != 17 {
		t.Errorf("v1: %d %v", id, ok)
	}
	id, ok = parseCgroupJob("0::/system.slice/slurmstepd.scope/job_23/step_0/user/task_0\n")
	if !ok || id != 23 {
		t.Errorf("v2: %d %v", id, ok)
	}
	if _, ok := parseCgroupJob("4:memory:/process_api/b9a4\n0::/\n"); ok {
		t.Error("non-Slurm cgroup read as a job")
	}
}

func TestParseJobID(t *testing.T) {
	for _, bad := range []string{"", "0", "-1", "01", "1/../2", "12a"} {
		if _, err := ParseJobID(bad); err == nil {
			t.Errorf("ParseJobID(%q): no error", bad)
		}
	}
	if n, err := ParseJobID("123"); err != nil || n != 123 {
		t.Errorf("ParseJobID(123) = %d, %v", n, err)
	}
}

func TestStore(t *testing.T) {
	s := &Store{Dir: t.TempDir() + "/slurm"}
	if err := s.Save(JobInfo{ID: 5, UID: 1001, GPUs: []int{2}}); err != nil {
		t.Fatal(err)
	}
	var ji JobInfo
	b, err := os.ReadFile(filepath.Join(s.Dir, "5", "allocation.json"))
	if err == nil {
		err = json.Unmarshal(b, &ji)
	}
	if err != nil || ji.UID != 1001 || !reflect.DeepEqual(ji.GPUs, []int{2}) {
		t.Fatalf("saved: %+v %v", ji, err)
	}
	if err := s.Remove(5); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(5); err != nil {
		t.Errorf("second Remove: %v (not found counts as clean)", err)
	}
	if _, err := os.Stat(s.Path(5)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after Remove: %v", err)
	}
}

func TestForged(t *testing.T) {
	ji := JobInfo{ID: 7, UID: 1001, CPUs: 2, MemoryMB: 1024, GPUs: []int{1, 3}}
	now := time.Unix(0, 0)
	honest := map[string]string{"SLURM_JOB_ID": "7", "SLURM_JOBID": "7", "SLURM_JOB_UID": "1001",
		"SLURM_JOB_GPUS": "1,3", "SLURM_CPUS_ON_NODE": "2", "SLURM_MEM_PER_NODE": "1024", "CUDA_VISIBLE_DEVICES": "0,1"}
	if v := Forged(honest, ji, now); len(v) != 0 {
		t.Errorf("honest environment: %v", v)
	}
	if v := Forged(nil, ji, now); len(v) != 0 {
		t.Errorf("empty environment: %v", v)
	}
	forged := map[string]string{"SLURM_JOB_ID": "8", "SLURM_JOB_UID": "0", "SLURM_JOB_GPUS": "0,1,2,3",
		"SLURM_STEP_GPUS": "1", "SLURM_CPUS_ON_NODE": "64", "SLURM_MEM_PER_NODE": "999999"}
	var got []string
	for _, v := range Forged(forged, ji, now) {
		if v.Kind != ForgedEnv || v.Action != violation.Recorded || !strings.Contains(v.Detail, "job 7") {
			t.Errorf("violation %+v", v)
		}
		got = append(got, ForgedName(v))
	}
	want := []string{"SLURM_JOB_ID", "SLURM_JOB_UID", "SLURM_JOB_GPUS", "SLURM_CPUS_ON_NODE", "SLURM_MEM_PER_NODE"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("forged variables = %v, want %v", got, want)
	}
}

func TestJobCgroupDirs(t *testing.T) {
	v1 := "6:freezer:/slurm_n1/uid_1001/job_17/step_batch\n4:memory:/slurm/uid_1001/job_17/step_0/task_0\n3:cpu,cpuacct:/\n1:name=systemd:/\n"
	got := jobCgroupDirs(v1, "/sys/fs/cgroup", 17)
	want := []string{"/sys/fs/cgroup/freezer/slurm_n1/uid_1001/job_17", "/sys/fs/cgroup/memory/slurm/uid_1001/job_17"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("v1: %v, want %v", got, want)
	}
	v2 := "0::/system.slice/slurmstepd.scope/job_23/step_0/user/task_0\n"
	if got := jobCgroupDirs(v2, "/sys/fs/cgroup", 23); !reflect.DeepEqual(got, []string{"/sys/fs/cgroup/system.slice/slurmstepd.scope/job_23"}) {
		t.Errorf("v2: %v", got)
	}
	if got := jobCgroupDirs(v1, "/sys/fs/cgroup", 1); len(got) != 0 {
		t.Errorf("job 1 (a prefix of 17): %v", got)
	}
}

func TestReportUsage(t *testing.T) {
	var got []string
	c := &Client{run: func(_ context.Context, tool string, args ...string) ([]byte, error) {
		got = append([]string{tool}, args...)
		return nil, nil
	}}
	if err := c.ReportUsage(context.Background(), 42, "securetrain: job a exited 0\n  slurm_env violation (x)"); err != nil {
		t.Fatal(err)
	}
	want := []string{"scontrol", "update", "JobId=42", "AdminComment=securetrain: job a exited 0; slurm_env violation (x)"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ran %q, want %q", got, want)
	}
	c.ReportUsage(context.Background(), 42, strings.Repeat("é", 600))
	if v := strings.TrimPrefix(got[3], "AdminComment="); len(v) > 1000 || !utf8.ValidString(v) {
		t.Errorf("long comment: %d bytes, valid UTF-8 %v", len(v), utf8.ValidString(v))
	}
}
