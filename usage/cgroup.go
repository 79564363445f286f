package usage

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
)

// cgroupStats are the counters read from one sandbox cgroup.
type cgroupStats struct {
	CPUUser, CPUSystem    float64
	MemUsage, MemPeak     uint64
	MemFailcnt, OOMKills  uint64
	BlockRead, BlockWrite uint64
	Tasks                 int
	PidsMaxHit            uint64
	Procs                 []int // host pids (cgroup.procs)
}

// cgroup reads one sandbox's cgroup, v1 or v2.
type cgroup struct {
	v2 bool
	// v2: dir is the unified directory; v1: dirs per controller.
	dir  string
	dirs map[string]string
}

// userHZ is the unit of cpuacct.stat (USER_HZ is 100 on every Linux ABI).
const userHZ = 100

func openCgroup(root, path string) (*cgroup, error) {
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	if path == "" || !filepath.IsAbs(path) || filepath.Clean(path) != path || path == "/" {
		return nil, fmt.Errorf("%w: CgroupPath %q must be a clean absolute path below the cgroup root, like /securetrain/<jobid>", ErrConfig, path)
	}
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return &cgroup{v2: true, dir: filepath.Join(root, path)}, nil
	}
	c := &cgroup{dirs: map[string]string{}}
	for _, ctl := range []string{"cpuacct", "memory", "pids", "blkio"} {
		c.dirs[ctl] = filepath.Join(root, ctl, path)
	}
	return c, nil
}

// Version is 1 or 2.
func (c *cgroup) Version() int {
	if c.v2 {
		return 2
	}
	return 1
}

// read reads every counter. A missing cgroup is ErrNoCgroup; a missing
// optional file (older kernels: memory.peak, pids.peak) leaves its field zero.
func (c *cgroup) read() (cgroupStats, error) {
	if c.v2 {
		return c.readV2()
	}
	return c.readV1()
}

func (c *cgroup) exists(dir string) error {
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: %s", ErrNoCgroup, dir)
		}
		return fmt.Errorf("usage: cgroup %s: %w", dir, err)
	}
	return nil
}

func (c *cgroup) readV2() (cgroupStats, error) {
	var st cgroupStats
	d := c.dir
	if err := c.exists(d); err != nil {
		return st, err
	}
	var errs []error
	must := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	kv, err := readKV(filepath.Join(d, "cpu.stat"))
	must(err)
	st.CPUUser = float64(kv["user_usec"]) / 1e6
	st.CPUSystem = float64(kv["system_usec"]) / 1e6
	st.MemUsage, err = readUint(filepath.Join(d, "memory.current"))
	must(err)
	st.MemPeak, _ = readUint(filepath.Join(d, "memory.peak"))
	ev, err := readKV(filepath.Join(d, "memory.events"))
	must(err)
	st.OOMKills, st.MemFailcnt = ev["oom_kill"], ev["max"]
	n, err := readUint(filepath.Join(d, "pids.current"))
	must(err)
	st.Tasks = int(n)
	pev, _ := readKV(filepath.Join(d, "pids.events"))
	st.PidsMaxHit = pev["max"]
	st.BlockRead, st.BlockWrite, _ = readIOStatV2(filepath.Join(d, "io.stat"))
	st.Procs, err = readPids(filepath.Join(d, "cgroup.procs"))
	must(err)
	return st, errors.Join(errs...)
}

func (c *cgroup) readV1() (cgroupStats, error) {
	var st cgroupStats
	if err := c.exists(c.dirs["memory"]); err != nil {
		return st, err
	}
	var errs []error
	must := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	cpu, mem, pids, blk := c.dirs["cpuacct"], c.dirs["memory"], c.dirs["pids"], c.dirs["blkio"]
	// Nanosecond counters where the kernel has them, else USER_HZ ticks.
	u, eu := readUint(filepath.Join(cpu, "cpuacct.usage_user"))
	s, es := readUint(filepath.Join(cpu, "cpuacct.usage_sys"))
	if eu == nil && es == nil {
		st.CPUUser, st.CPUSystem = float64(u)/1e9, float64(s)/1e9
	} else {
		kv, err := readKV(filepath.Join(cpu, "cpuacct.stat"))
		must(err)
		st.CPUUser = float64(kv["user"]) / userHZ
		st.CPUSystem = float64(kv["system"]) / userHZ
	}
	var err error
	st.MemUsage, err = readUint(filepath.Join(mem, "memory.usage_in_bytes"))
	must(err)
	st.MemPeak, err = readUint(filepath.Join(mem, "memory.max_usage_in_bytes"))
	must(err)
	st.MemFailcnt, err = readUint(filepath.Join(mem, "memory.failcnt"))
	must(err)
	oc, err := readKV(filepath.Join(mem, "memory.oom_control"))
	must(err)
	st.OOMKills = oc["oom_kill"]
	n, err := readUint(filepath.Join(pids, "pids.current"))
	must(err)
	st.Tasks = int(n)
	pev, _ := readKV(filepath.Join(pids, "pids.events"))
	st.PidsMaxHit = pev["max"]
	st.BlockRead, st.BlockWrite, _ = readBlkioV1(filepath.Join(blk, "blkio.throttle.io_service_bytes"))
	st.Procs, err = readPids(filepath.Join(mem, "cgroup.procs"))
	must(err)
	return st, errors.Join(errs...)
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("usage: read %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("usage: %s: %q is not a counter: %w", path, s, err)
	}
	return v, nil
}

// readKV parses "key value" lines (cpu.stat, memory.events, oom_control, ...).
func readKV(path string) (map[string]uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("usage: read %s: %w", path, err)
	}
	m := map[string]uint64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseUint(f[1], 10, 64); err == nil {
			m[f[0]] = v
		}
	}
	return m, nil
}

// readIOStatV2 sums rbytes and wbytes over the devices of io.stat.
func readIOStatV2(path string) (r, w uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "rbytes":
				r += n
			case "wbytes":
				w += n
			}
		}
	}
	return r, w, nil
}

// readBlkioV1 sums the Read and Write lines of blkio.*io_service_bytes.
func readBlkioV1(path string) (r, w uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		n, err := strconv.ParseUint(f[2], 10, 64)
		if err != nil {
			continue
		}
		switch f[1] {
		case "Read":
			r += n
		case "Write":
			w += n
		}
	}
	return r, w, nil
}

func readPids(path string) ([]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("usage: read %s: %w", path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids, nil
}
