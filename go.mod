module github.com/securetrain/securetrain

go 1.25.0

require (
	github.com/NVIDIA/go-nvml v0.13.4-1
	github.com/prometheus/procfs v0.19.2
	golang.org/x/sys v0.37.0
)
