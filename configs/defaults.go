package configs

import "time"

// Built-in defaults. They are filled in here and nowhere else.
const (
	DefaultCPUs      = 2
	DefaultMemory    = 8 << 30
	DefaultPids      = 4096
	DefaultWallTime  = 24 * time.Hour
	DefaultScratch   = 4 << 30
	DefaultHome      = 4 << 30
	DefaultShm       = 1 << 30
	DefaultStopGrace = 10 * time.Second
	DefaultCPUGrace  = 60 * time.Second
	DefaultGPUGrace  = 10 * time.Second
	DefaultLogLimit  = 64 << 20
	DefaultOutput    = "outputs"
	DefaultPlatform  = "systrap"
	DefaultDNSMinTTL = 30 * time.Second
	DefaultVaultTTL  = time.Hour
)

// SetDefaults fills every field left empty with its built-in default.
func (p *Profile) SetDefaults() {
	l := &p.Limits
	if l.CPUs == 0 {
		l.CPUs = DefaultCPUs
	}
	if l.Memory == 0 {
		l.Memory = DefaultMemory
	}
	if l.Pids == 0 {
		l.Pids = DefaultPids
	}
	if l.WallTime == 0 {
		l.WallTime = Duration(DefaultWallTime)
	}
	if l.Scratch == 0 {
		l.Scratch = DefaultScratch
	}
	if l.Home == 0 {
		l.Home = DefaultHome
	}
	if l.Shm == 0 {
		l.Shm = DefaultShm
	}
	if l.StopGrace == 0 {
		l.StopGrace = Duration(DefaultStopGrace)
	}
	if l.Grace.CPUs == 0 {
		l.Grace.CPUs = Duration(DefaultCPUGrace)
	}
	if l.Grace.GPUMemory == 0 {
		l.Grace.GPUMemory = Duration(DefaultGPUGrace)
	}
	s := &p.Sandbox
	if s.Rootfs == "" {
		s.Rootfs = "host"
	}
	if s.Output == "" {
		s.Output = DefaultOutput
	}
	if s.LogLimit == 0 {
		s.LogLimit = DefaultLogLimit
	}
	if s.Platform == "" {
		s.Platform = DefaultPlatform
	}
	if len(p.GPU.Capabilities) == 0 {
		p.GPU.Capabilities = []string{"compute", "utility"}
	}
	n := &p.Network
	if n.Mode == "" {
		n.Mode = "none"
		if len(n.Allow) > 0 || len(n.Peers) > 0 {
			n.Mode = "sandbox"
		}
	}
	if n.Policy == "" {
		n.Policy = "enforce"
	}
	if n.DNSMinTTL == 0 {
		n.DNSMinTTL = Duration(DefaultDNSMinTTL)
	}
	v := &p.Vault
	if v.OnRenewFailure == "" {
		v.OnRenewFailure = "stop"
	}
	if v.TTL == 0 && len(p.Secrets) > 0 {
		v.TTL = Duration(min(DefaultVaultTTL, l.WallTime.D()))
	}
	for i := range p.Inputs {
		if p.Inputs[i].Kind == "" {
			p.Inputs[i].Kind = "dataset"
		}
	}
}
