package slurm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// Store keeps one directory per Slurm job that has an allocation on this
// node: Dir/<slurm job id>/allocation.json, written by the prolog (root
// only, 0700) and removed by the epilog: what Slurm allocated, as the
// prolog saw it, for the node's administrator.
type Store struct {
	Dir string // e.g. /run/securetrain/slurm
}

// Path is the state directory of Slurm job id.
func (s *Store) Path(id uint64) string {
	return filepath.Join(s.Dir, strconv.FormatUint(id, 10))
}

// Save records the allocation, replacing an earlier record of the same job.
func (s *Store) Save(ji JobInfo) error {
	if ji.ID == 0 {
		return fmt.Errorf("slurm state: job id 0")
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("slurm state: %w", err)
	}
	dir := s.Path(ji.ID)
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("slurm state: %w", err)
	}
	b, err := json.MarshalIndent(ji, "", "  ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "allocation.json.tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("slurm state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "allocation.json")); err != nil {
		return fmt.Errorf("slurm state: %w", err)
	}
	return nil
}

// Remove deletes the job's state; a job without state is already clean.
func (s *Store) Remove(id uint64) error {
	if err := os.RemoveAll(s.Path(id)); err != nil {
		return fmt.Errorf("slurm state: %w", err)
	}
	return nil
}
