package launcher

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/securetrain/securetrain/configs"
)

// TestNetConfigUpstreams: the host config accepts resolvers with and
// without a port; netguard gets ip:port for each.
func TestNetConfigUpstreams(t *testing.T) {
	l := &Launcher{Host: &configs.Host{StateDir: t.TempDir(), Network: configs.HostNetwork{
		Pool: "10.213.0.0/16", Upstreams: []string{"127.0.0.53", "10.0.0.2:5353", "fd00::53"}}},
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p := &configs.Profile{}
	p.Network.Mode = "sandbox"
	cfg, err := l.netConfig(p, Request{})
	if err != nil {
		t.Fatalf("netConfig: %v", err)
	}
	want := []string{"127.0.0.53:53", "10.0.0.2:5353", "[fd00::53]:53"}
	if !slices.Equal(cfg.Upstreams, want) {
		t.Fatalf("Upstreams = %q, want %q", cfg.Upstreams, want)
	}
}
