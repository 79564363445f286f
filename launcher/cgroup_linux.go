package launcher

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// cgroupRoot is where cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// The job's cgroups: the launcher owns /securetrain/<id> (the accounting
// anchor) and runsc creates and applies the spec's limits to
// /securetrain/<id>/sandbox beneath it. runsc removes its cgroup when the
// sandbox is deleted; the parent's hierarchical counters (CPU time, peak
// memory) outlive it, so the final account is read from the parent after
// runsc is done.
func jobCgroup(id string) string     { return "/securetrain/" + id }
func sandboxCgroup(id string) string { return jobCgroup(id) + "/sandbox" }

// accountingControllers are the v1 hierarchies the parent is made in.
var accountingControllers = []string{"cpu", "cpuacct", "memory", "pids", "blkio"}

func cgroupV2() bool {
	_, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers"))
	return err == nil
}

// makeCgroup creates the job's parent cgroup.
func makeCgroup(rel string) error {
	if cgroupV2() {
		for _, d := range []string{filepath.Join(cgroupRoot, "securetrain"), filepath.Join(cgroupRoot, rel)} {
			if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("cgroup %s: %w", d, err)
			}
			// Let the children have the controllers their limits need.
			_ = os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte("+cpu +memory +pids +io"), 0)
		}
		return nil
	}
	for _, c := range accountingControllers {
		base := filepath.Join(cgroupRoot, c)
		if _, err := os.Stat(base); err != nil {
			continue
		}
		if err := os.MkdirAll(filepath.Join(base, rel), 0o755); err != nil {
			return fmt.Errorf("cgroup %s: %w", filepath.Join(base, rel), err)
		}
	}
	return nil
}

// removeCgroup removes a job's cgroups (the sandbox's, if runsc left it,
// then the parent) in every hierarchy. Only directories under a securetrain
// parent are ever touched. Missing means clean.
func removeCgroup(rel string) error {
	if !strings.HasPrefix(rel, "/securetrain/") || strings.Contains(rel, "..") {
		return nil
	}
	var errs []error
	try := func(p string) {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	var bases []string
	if cgroupV2() {
		bases = []string{cgroupRoot}
	} else {
		ents, _ := os.ReadDir(cgroupRoot)
		for _, e := range ents {
			bases = append(bases, filepath.Join(cgroupRoot, e.Name()))
		}
	}
	for _, b := range bases {
		try(filepath.Join(b, rel, "sandbox"))
		try(filepath.Join(b, rel))
	}
	return errors.Join(errs...)
}
