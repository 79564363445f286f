//go:build !linux

package netguard

import (
	"context"
	"errors"
	"net/netip"

	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/violation"
)

// ErrUnsupported is returned on systems other than Linux.
var ErrUnsupported = errors.New("netguard needs Linux (netns, veth, nftables)")

// Guard is one job's network confinement (Linux only).
type Guard struct{}

// Setup fails: netguard needs Linux.
func Setup(context.Context, Config, jobstate.Recorder) (*Guard, error) { return nil, ErrUnsupported }

// GC fails: netguard needs Linux.
func GC(context.Context, jobstate.Resource) error { return ErrUnsupported }

// Check reports that netguard cannot run here.
func Check(string) []CheckResult {
	return []CheckResult{{Name: "netguard", OK: false, Detail: ErrUnsupported.Error()}}
}

func (g *Guard) Violations() <-chan violation.Violation { return nil }
func (g *Guard) Contacted() []Contact                   { return nil }
func (g *Guard) EgressBytes() map[string]uint64         { return nil }
func (g *Guard) NetnsPath() string                      { return "" }
func (g *Guard) JobAddr() netip.Addr                    { return netip.Addr{} }
func (g *Guard) ResolvConf() []byte                     { return nil }
func (g *Guard) Hosts(string) []byte                    { return nil }
func (g *Guard) Env() map[string]string                 { return nil }
func (g *Guard) Close() error                           { return nil }
func (g *Guard) ProxyAddr() netip.Addr                  { return netip.Addr{} }
func (g *Guard) HostIf() string                         { return "" }
func (g *Guard) Table() string                          { return "" }
func (g *Guard) Dropped() int                           { return 0 }
func (g *Guard) Refused() Refused                       { return Refused{} }

// Refused is what the job's boundary turned away (Linux only).
type Refused struct {
	Inbound, ProxyPackets, ProxyQueries uint64
}
