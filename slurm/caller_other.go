//go:build !linux

package slurm

import (
	"context"
	"errors"
	"fmt"
)

// CallerJob needs Linux's /proc.
func (c *Client) CallerJob(ctx context.Context, pid int) (JobInfo, error) {
	return JobInfo{}, fmt.Errorf("pid %d: %w", pid, errors.ErrUnsupported)
}

// JobCgroups needs Linux's /proc.
func JobCgroups(pid int, id uint64) ([]string, error) {
	return nil, fmt.Errorf("pid %d: %w", pid, errors.ErrUnsupported)
}
