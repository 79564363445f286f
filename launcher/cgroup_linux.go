package launcher

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// cgroupRoot is where cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// removeCgroup removes a job's cgroup directories (v1: one per controller;
// v2: one) if runsc left them. Only directories under a securetrain parent
// are ever touched. Missing means clean.
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
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		try(filepath.Join(cgroupRoot, rel))
		return errors.Join(errs...)
	}
	ents, _ := os.ReadDir(cgroupRoot)
	for _, e := range ents {
		try(filepath.Join(cgroupRoot, e.Name(), rel))
	}
	return errors.Join(errs...)
}
