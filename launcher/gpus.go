package launcher

import "github.com/securetrain/securetrain/sandbox"

// HostGPUs lists the host's GPU indices (/dev/nvidiaN), the GPUs a job may
// be given; callers outside the launcher (the daemon's allocator) ask here
// rather than reach into the sandbox.
func HostGPUs() ([]int, error) { return sandbox.GPUHost{}.Indices() }
