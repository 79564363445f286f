package usage

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"time"
)

// runscEvent is the JSON line `runsc events --stats` prints (runsc's
// boot.EventOut: {"type":"stats","id":...,"data":{...}}), reduced to the
// fields used here. Checked against the pinned runsc:
//
//	{"type":"stats","id":"tx","data":{"cpu":{"usage":{"total":1416375615}},
//	 "memory":{"usage":{"limit":0,"usage":64200704,"failcnt":0},...},
//	 "pids":{"current":1},"network_interfaces":[...]}}
type runscEvent struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Data struct {
		CPU struct {
			Usage struct {
				Total uint64 `json:"total"` // ns
			} `json:"usage"`
		} `json:"cpu"`
		Memory struct {
			Usage struct {
				Usage uint64 `json:"usage"`
			} `json:"usage"`
		} `json:"memory"`
		Pids struct {
			Current uint64 `json:"current"`
		} `json:"pids"`
	} `json:"data"`
}

// parseRunscStats reads the output of `runsc events --stats`.
func parseRunscStats(out []byte, now time.Time) (*SandboxStats, error) {
	var ev runscEvent
	if err := json.Unmarshal(bytes.TrimSpace(out), &ev); err != nil {
		return nil, fmt.Errorf("usage: runsc events output is not a stats event: %w", err)
	}
	if ev.Type != "stats" {
		return nil, fmt.Errorf("usage: runsc events: type %q, want \"stats\"", ev.Type)
	}
	return &SandboxStats{
		Time:   now,
		CPU:    float64(ev.Data.CPU.Usage.Total) / 1e9,
		Memory: ev.Data.Memory.Usage.Usage,
		Pids:   int(ev.Data.Pids.Current),
	}, nil
}

// runscStats runs `runsc --root R events --stats ID`.
func runscStats(ctx context.Context, runsc, root, id string) (*SandboxStats, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	args := []string{}
	if root != "" {
		args = append(args, "--root", root)
	}
	args = append(args, "events", "--stats", id)
	cmd := exec.CommandContext(ctx, runsc, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("usage: runsc events --stats %s: %w: %s", id, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return parseRunscStats(out, time.Now())
}
