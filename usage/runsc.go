package usage

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os/exec"
	"strconv"
	"sync"
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

// eventStream is one long-lived `runsc events --interval=N ID`: runsc
// asks the sentry every N seconds and prints a stats line, which the
// stream keeps. One process for the job's whole life instead of one per
// sample: starting runsc costs about 15 ms of CPU, the sentry's answer a
// small fraction of that.
type eventStream struct {
	pid    int
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	last *SandboxStats
}

// startEventStream starts runsc; it ends when the container does, when
// ctx is cancelled or on close.
func startEventStream(ctx context.Context, runsc, root, id string, every time.Duration, log *slog.Logger) (*eventStream, error) {
	ctx, cancel := context.WithCancel(ctx)
	secs := max(1, int(every.Round(time.Second)/time.Second))
	args := []string{}
	if root != "" {
		args = append(args, "--root", root)
	}
	args = append(args, "events", "--interval="+strconv.Itoa(secs), id)
	cmd := exec.CommandContext(ctx, runsc, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	// runsc events outlives its container (it keeps asking, silently): it
	// dies with the supervisor, and a terminal's Ctrl-C, meant for the
	// job, does not reach it.
	cmd.SysProcAttr = streamProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("usage: runsc events: %w", err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		return nil, fmt.Errorf("usage: runsc events: %w", err)
	}
	e := &eventStream{pid: cmd.Process.Pid, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(e.done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			st, err := parseRunscStats(sc.Bytes(), time.Now())
			if err != nil {
				log.Debug("runsc events", "err", err)
				continue
			}
			e.mu.Lock()
			e.last = st
			e.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	return e, nil
}

// latest is the newest stats line; nil before the first.
func (e *eventStream) latest() *SandboxStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.last
}

// close stops runsc and waits for it.
func (e *eventStream) close() {
	e.cancel()
	<-e.done
}
