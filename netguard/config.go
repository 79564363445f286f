package netguard

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/securetrain/securetrain/internal/charset"
)

// Defaults filled in by Config.withDefaults.
const (
	DefaultStateDir   = "/run/securetrain/netguard"
	DefaultMinTTL     = 30 * time.Second
	DefaultNFLogGroup = 0x5300 // first group; a job uses DefaultNFLogGroup+slot
	DefaultResolvConf = "/etc/resolv.conf"
)

// DefaultPool is the address pool jobs' /30 subnets come from.
var DefaultPool = netip.MustParsePrefix("10.213.0.0/16")

// ErrConfig marks a Config that fails validation.
var ErrConfig = errors.New("invalid netguard config")

// Config is everything netguard needs for one job. The launcher fills it from
// the profile, the host configuration and the command line.
type Config struct {
	JobID string // [A-Za-z0-9_.-], at most 48 characters
	Mode  Mode   // enforce (default), block or audit
	// Allow is the allowlist. Entries that allow everything need Unrestricted.
	Allow        []Rule
	Unrestricted bool
	// Peers are addresses (other ranks of a distributed job) allowed in both
	// directions, without NAT, on PeerPorts only.
	Peers     []netip.Prefix
	PeerPorts []PortRange
	// Allocation names the distributed job this one belongs to (a Slurm
	// job id). Its jobs on this node reach each other on PeerPorts, and its
	// first job here takes the allocation's address (AllocationAddr), which
	// other nodes compute without asking: their jobs name this node and
	// reach rank 0's rendezvous there. Needs PeerPorts.
	Allocation string
	// AllocationBlock is how many slots the allocation reserves on each
	// node (a power of two up to MaxAllocationBlock; 0 means 1), and
	// AllocationIndex which of them this job takes (its local task id). A
	// job whose index is outside the block, or whose slot a job of its own
	// allocation holds, takes any free slot: it reaches its allocation's
	// jobs on this node, but other nodes do not reach it.
	AllocationBlock int
	AllocationIndex int
	// HostNames are extra /etc/hosts entries of the job (an allocation's
	// node names mapped to its addresses on those nodes).
	HostNames map[string]netip.Addr
	// Upstreams are the resolvers the DNS proxy asks ("ip:port"); default:
	// the nameservers of /etc/resolv.conf.
	Upstreams []string
	// InternalRanges are private ranges that DNS answers may point at
	// (internal mirrors, MLflow, object stores). Other private answers are
	// dropped (DNS rebinding).
	InternalRanges []netip.Prefix
	MinTTL         time.Duration // floor of the set-element timeout; default 30s
	EgressBudget   int64         // bytes; 0: no budget
	// Pool is where the job's /30 comes from (default 10.213.0.0/16); a
	// subnet that overlaps a host route or another job's lease is skipped.
	Pool netip.Prefix
	// NodeRoutes lead to other nodes' job subnets (multi-node training).
	// netguard adds the missing ones with a job's lease and removes those
	// it added when the last job of StateDir ends (routes_linux.go).
	// They carry no permission: only Peers on PeerPorts pass.
	NodeRoutes []NodeRoute
	// StateDir holds the address leases and their lock (default
	// /run/securetrain/netguard). All jobs of a host must share it.
	StateDir string
	// NFLogGroup is the first NFLOG group; the job uses NFLogGroup+slot.
	NFLogGroup uint16
	Logger     *slog.Logger
}

// validJobID and validAllocation: ^[A-Za-z0-9_.-]{1,48}$ and
// ^[A-Za-z0-9_.+-]{1,64}$.
func validJobID(s string) bool      { return charset.Only(s, 1, 48, "_.-") }
func validAllocation(s string) bool { return charset.Only(s, 1, 64, "_.+-") }

// ValidHostName reports whether name can be an /etc/hosts name of a job:
// DNS labels, plus '_' (Slurm node names may have one; glibc resolves them
// from the file), 1 to 254 bytes, beginning and ending with a letter, digit
// or '_'. (Written out rather than as a regular expression: a repetition
// bounded at 252 compiles into a program of 252 copies at every start.)
func ValidHostName(name string) bool {
	if len(name) == 0 || len(name) > 254 {
		return false
	}
	end := func(c byte) bool {
		return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !end(c) && (i == 0 || i == len(name)-1 || (c != '.' && c != '-')) {
			return false
		}
	}
	return true
}

// withDefaults returns a copy with defaults filled in (one place).
func (c Config) withDefaults() (Config, error) {
	if c.Mode == "" {
		c.Mode = Enforce
	}
	if c.MinTTL == 0 {
		c.MinTTL = DefaultMinTTL
	}
	if !c.Pool.IsValid() {
		c.Pool = DefaultPool
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.NFLogGroup == 0 {
		c.NFLogGroup = DefaultNFLogGroup
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if len(c.Upstreams) == 0 {
		ups, err := ResolvConfServers(DefaultResolvConf)
		if err != nil {
			return c, fmt.Errorf("%w: upstreams: none given and %w", ErrConfig, err)
		}
		c.Upstreams = ups
	}
	return c, nil
}

// Validate runs every check and returns them all joined.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...))
	}
	if !validJobID(c.JobID) {
		bad("job id %q: allowed 1-48 characters of A-Z a-z 0-9 _ . -", c.JobID)
	}
	switch c.Mode {
	case Enforce, Block, Audit:
	default:
		bad("mode %q: allowed enforce, block, audit", c.Mode)
	}
	for _, r := range c.Allow {
		if r.AllowsAll() && !c.Unrestricted {
			errs = append(errs, fmt.Errorf("%w %q: set unrestricted: true in the profile to allow every destination", ErrAllowsAll, r))
		}
		if !r.IsHost() && r.Prefix.Addr().Is6() && r.Prefix.Bits() != 0 {
			bad("allow entry %q: IPv6 egress is not supported yet (jobs get IPv4 only)", r)
		}
		if r.PortLo > r.PortHi {
			bad("allow entry %q: reversed port range", r)
		}
	}
	for _, p := range c.Peers {
		if !p.Addr().Is4() || p.Bits() == 0 {
			bad("peer %s: allowed an IPv4 address or a narrower-than-/0 IPv4 CIDR", p)
		}
		for _, d := range alwaysDenied4 {
			if p.Overlaps(d) {
				bad("peer %s: overlaps always-denied %s", p, d)
			}
		}
	}
	if len(c.Peers) > 0 && len(c.PeerPorts) == 0 {
		bad("peer_ports: required when peers are set (e.g. 29500-29510 for torchrun)")
	}
	if c.Allocation != "" {
		if !validAllocation(c.Allocation) {
			bad("allocation %q: allowed 1-64 characters of A-Z a-z 0-9 _ . + -", c.Allocation)
		}
		if len(c.PeerPorts) == 0 {
			bad("peer_ports: required for an allocation (its jobs reach each other on them)")
		}
		if b := c.AllocationBlock; b < 0 || b&(b-1) != 0 || b > MaxAllocationBlock {
			bad("allocation block %d: allowed a power of two from 1 to %d", b, MaxAllocationBlock)
		}
		if c.AllocationIndex < 0 {
			bad("allocation index %d: must not be negative", c.AllocationIndex)
		}
	}
	for name, a := range c.HostNames {
		if !ValidHostName(name) {
			bad("host name %q: allowed letters, digits, '_', '-' and '.', not starting or ending with '-' or '.'", name)
		}
		if !a.Is4() {
			bad("host name %s: address %s: allowed an IPv4 address", name, a)
		}
	}
	for _, u := range c.Upstreams {
		if _, err := netip.ParseAddrPort(u); err != nil {
			bad("upstream %q: allowed ip:port (IPv6 as [ip]:port)", u)
		}
	}
	if c.MinTTL < 0 {
		bad("min_ttl %s: must not be negative", c.MinTTL)
	}
	if c.EgressBudget < 0 {
		bad("egress budget %d: must not be negative (0 means none)", c.EgressBudget)
	}
	if c.Pool.IsValid() && (!c.Pool.Addr().Is4() || c.Pool.Bits() > 30) {
		bad("pool %s: allowed an IPv4 CIDR of /30 or wider", c.Pool)
	}
	if c.Pool.IsValid() && int(c.NFLogGroup)+poolSlots(c.Pool) > 65535 {
		bad("nflog group %d: group + pool slots (%d) exceeds 65535", c.NFLogGroup, poolSlots(c.Pool))
	}
	pool := c.Pool
	if !pool.IsValid() {
		pool = DefaultPool
	}
	errs = append(errs, validateNodeRoutes(c.NodeRoutes, pool)...)
	return errors.Join(errs...)
}

func poolSlots(p netip.Prefix) int {
	if p.Bits() > 30 {
		return 0
	}
	return 1 << (30 - p.Bits())
}

// ResolvConfServers returns the nameservers of a resolv.conf as "ip:53".
func ResolvConfServers(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ups := parseResolvConf(f)
	if len(ups) == 0 {
		return nil, fmt.Errorf("%s has no nameserver line", path)
	}
	return ups, nil
}

func parseResolvConf(r io.Reader) []string {
	var ups []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Zone() == "" {
				ups = append(ups, net.JoinHostPort(a.String(), "53"))
			}
		}
	}
	return ups
}
