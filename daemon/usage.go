package daemon

import (
	"context"
	"time"

	"github.com/securetrain/securetrain/metrics"
)

// publishUsage copies every live job's newest usage sample (the file the
// launcher writes in the job's state, which `securetrain ps` reads too) into
// the Prometheus metrics, until ctx ends.
func (s *Server) publishUsage(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	store := s.Launcher.Store()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		jobs, err := store.List()
		if err != nil {
			continue
		}
		for _, j := range jobs {
			if !j.Live {
				continue
			}
			u, ok := store.LiveUsage(j.ID)
			if !ok {
				continue
			}
			mu := metrics.Usage{CPUSeconds: u.JobCPU(), MemoryBytes: float64(u.MemUsage), MemoryPeakBytes: float64(u.MemPeak)}
			for _, g := range u.GPUs {
				mu.GPUSeconds += g.BusySeconds
			}
			s.Metrics.SetUsage(j.ID, j.User, mu)
		}
	}
}
