package netguard

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/securetrain/securetrain/internal/hostnet"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Host-wide state shared by all jobs lives in Config.StateDir:
//
//	lock              flock(2) held while leases change
//	leases/<slot>     one file per live job (content: job id)
//	forwarding-owned  present while netguard has switched IPv4 forwarding on;
//	                  lists the interfaces the host had then, one a line
//
// When the first job starts on a host that does not forward, netguard turns
// on net.ipv4.ip_forward and installs table inet securetrain-fwd, which drops
// forwarded packets between two of the interfaces the host had then, so the
// host does not become a router for them (job veths, and interfaces made
// later, are not confined: Docker or a VPN started meanwhile forwards as it
// expects). The last job to leave turns forwarding off again only if nothing
// else can have come to depend on it: forwarding is still on and the host
// has no interface it lacked when netguard turned it on (a bridge, a tunnel,
// another state dir's job veth). Otherwise it hands forwarding over: it stays
// on, and netguard drops its table and its claim.
const (
	vethPrefix      = VethPrefix
	fwdTable        = ForwardTable
	ipForwardSysctl = "/proc/sys/net/ipv4/ip_forward"
)

// Resource kinds netguard records.
const (
	KindLease      = "netguard.lease"
	KindForwarding = "netguard.forwarding"
	KindNetns      = "netguard.netns"
	KindVeth       = "netguard.veth"
	KindTable      = "netguard.nftables"
)

func withLock(dir string, f func() error) error {
	if err := os.MkdirAll(filepath.Join(dir, "leases"), 0o700); err != nil {
		return fmt.Errorf("netguard state dir: %w", err)
	}
	lf, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("netguard state dir: %w", err)
	}
	defer lf.Close()
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("netguard lock %s: %w", lf.Name(), err)
	}
	return f()
}

// hostPrefixes returns the host's IPv4 route destinations and addresses (a
// job subnet must overlap none of them) and all its own addresses.
func hostPrefixes() (routes []netip.Prefix, own []netip.Prefix, err error) {
	rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, nil, fmt.Errorf("list host routes: %w", err)
	}
	for _, r := range rs {
		if r.Dst == nil {
			continue
		}
		if p, ok := ipnetPrefix(r.Dst.IP, r.Dst.Mask); ok && p.Bits() > 0 {
			routes = append(routes, p)
		}
	}
	as, err := netlink.AddrList(nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, nil, fmt.Errorf("list host addresses: %w", err)
	}
	for _, a := range as {
		ad, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ad = ad.Unmap()
		own = append(own, netip.PrefixFrom(ad, ad.BitLen()))
		if p, ok := ipnetPrefix(a.IP, a.Mask); ok && p.Addr().Is4() {
			routes = append(routes, p)
		}
	}
	return routes, own, nil
}

func ipnetPrefix(ip []byte, mask []byte) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, false
	}
	ones := 0
	for _, m := range mask {
		for i := 7; i >= 0; i-- {
			if m&(1<<i) != 0 {
				ones++
			}
		}
	}
	a = a.Unmap()
	if len(mask) == 16 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}

// lease is one live job's lease file: leases/<slot> holds its job id, its
// allocation (empty for none) and its address, a line each.
type lease struct {
	Slot       int
	Job        string
	Allocation string
	Addr       netip.Addr
}

func readLeases(dir string) ([]lease, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "leases"))
	if err != nil {
		return nil, fmt.Errorf("netguard leases: %w", err)
	}
	var out []lease
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "leases", e.Name()))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("netguard lease: %w", err)
		}
		l := lease{Slot: n}
		lines := strings.Split(string(b), "\n")
		l.Job = strings.TrimSpace(lines[0])
		if len(lines) > 2 {
			l.Allocation = strings.TrimSpace(lines[1])
			l.Addr, _ = netip.ParseAddr(strings.TrimSpace(lines[2]))
		}
		out = append(out, l)
	}
	return out, nil
}

// acquireLease picks a free slot, records it, writes its lease file and, for
// the first job, switches forwarding on. It runs under the state lock. A
// job of an allocation takes its task's slot of the allocation's block
// (AllocationSlot + AllocationIndex) or fails if another allocation's or
// a plain job holds it: other nodes reach the allocation's task there and
// nowhere else. A second job for the same task, or a task outside the
// block, takes any free slot.
func acquireLease(cfg Config, rec jobstate.Recorder) (slot int, err error) {
	err = withLock(cfg.StateDir, func() error {
		routes, _, err := hostPrefixes()
		if err != nil {
			return err
		}
		leases, err := readLeases(cfg.StateDir)
		if err != nil {
			return err
		}
		taken := map[int]lease{}
		for _, l := range leases {
			taken[l.Slot] = l
		}
		usable := func(i int) error {
			if l, ok := taken[i]; ok {
				return fmt.Errorf("held by job %s", l.Job)
			}
			sub := slotSubnet(cfg.Pool, i)
			for _, r := range routes {
				if overlaps(r, sub) {
					return fmt.Errorf("overlaps host route %s", r)
				}
			}
			return nil
		}
		slot = -1
		if block := max(cfg.AllocationBlock, 1); cfg.Allocation != "" && cfg.AllocationIndex < block {
			if block > poolSlots(cfg.Pool) {
				return fmt.Errorf("allocation block %d: larger than the %d slots of %s", block, poolSlots(cfg.Pool), cfg.Pool)
			}
			want := AllocationSlot(cfg.Pool, cfg.Allocation, block) + cfg.AllocationIndex
			err := usable(want)
			switch {
			case err == nil:
				slot = want
			case !sameAllocation(taken[want], cfg.Allocation):
				return fmt.Errorf("allocation %s: its address %s (task %d) on this node is %v; other nodes reach the allocation there only (use a larger network.node_subnet, or end that job)",
					cfg.Allocation, slotJobAddr(cfg.Pool, want), cfg.AllocationIndex, err)
			}
		}
		// A free slot whose veth the kernel is still removing (an earlier
		// job's, see Guard.releaseVeth) is taken only when no other is free.
		stale := -1
		for i := 0; slot < 0 && i < poolSlots(cfg.Pool); i++ {
			switch {
			case usable(i) != nil:
			case linkExists(vethPrefix + strconv.FormatInt(int64(i), 16)):
				if stale < 0 {
					stale = i
				}
			default:
				slot = i
			}
		}
		if slot < 0 {
			slot = stale
		}
		if slot < 0 {
			return fmt.Errorf("netguard pool %s: no free /30 (all leased or overlapping host routes)", cfg.Pool)
		}
		attrs := map[string]string{"state_dir": cfg.StateDir, "slot": strconv.Itoa(slot), "job": cfg.JobID}
		if err := rec.Record(jobstate.Resource{Kind: KindLease, Name: slotSubnet(cfg.Pool, slot).String(), Attrs: attrs}); err != nil {
			return fmt.Errorf("record lease: %w", err)
		}
		body := cfg.JobID + "\n" + cfg.Allocation + "\n" + slotJobAddr(cfg.Pool, slot).String() + "\n"
		if err := os.WriteFile(leasePath(cfg.StateDir, slot), []byte(body), 0o600); err != nil {
			return fmt.Errorf("netguard lease: %w", err)
		}
		if len(leases) == 0 {
			if err := ownForwarding(cfg.StateDir, rec); err != nil {
				os.Remove(leasePath(cfg.StateDir, slot))
				return err
			}
		}
		if err := ensureNodeRoutes(cfg.StateDir, cfg.NodeRoutes, rec); err != nil {
			os.Remove(leasePath(cfg.StateDir, slot))
			return errors.Join(err, lastOut(cfg.StateDir))
		}
		return nil
	})
	return slot, err
}

// syncAllocations sets every live allocation job's set of mates to the
// addresses of its allocation's other live jobs, so a job that leaves (or
// crashed and was collected) grants nothing to whoever gets its address
// next. It runs under the state lock, after a job's table exists and after
// a lease is released; a job whose table is not made yet is skipped (its
// own join fills it).
func syncAllocations(dir string) error {
	leases, err := readLeases(dir)
	if err != nil {
		return err
	}
	groups := map[string][]lease{}
	for _, l := range leases {
		if l.Allocation != "" && l.Addr.IsValid() {
			groups[l.Allocation] = append(groups[l.Allocation], l)
		}
	}
	var errs []error
	for _, g := range groups {
		for _, l := range g {
			var els []nftables.SetElement
			for _, m := range g {
				if m.Slot != l.Slot {
					els = append(els, nftables.SetElement{Key: m.Addr.AsSlice()})
				}
			}
			if err := replaceMates(NamePrefix+l.Job, els); err != nil {
				errs = append(errs, fmt.Errorf("allocation %s, job %s: %w", l.Allocation, l.Job, err))
			}
		}
	}
	return errors.Join(errs...)
}

// replaceMates replaces the elements of table's mates set in one batch; a table
// (or set) not made yet is skipped.
func replaceMates(table string, els []nftables.SetElement) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	s, err := c.GetSetByName(t, setMates)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		return fmt.Errorf("nftables set %s of %s: %w", setMates, table, err)
	}
	c.FlushSet(s)
	if len(els) > 0 {
		if err := c.SetAddElements(s, els); err != nil {
			return err
		}
	}
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables set %s of %s: %w", setMates, table, err)
	}
	return nil
}

// sameAllocation reports whether a lease (possibly the zero one of a free
// slot) belongs to a job of allocation.
func sameAllocation(l lease, allocation string) bool {
	return l.Job != "" && l.Allocation == allocation
}

func leasePath(dir string, slot int) string {
	return filepath.Join(dir, "leases", strconv.Itoa(slot))
}

// ownForwarding turns IPv4 forwarding on, confined to job veths, unless it
// is on already.
func ownForwarding(dir string, rec jobstate.Recorder) error {
	owned := filepath.Join(dir, "forwarding-owned")
	if _, err := os.Stat(owned); err == nil {
		return nil
	}
	cur, err := os.ReadFile(ipForwardSysctl)
	if err != nil {
		return fmt.Errorf("read %s: %w", ipForwardSysctl, err)
	}
	if strings.TrimSpace(string(cur)) != "0" {
		return nil // the host routes already; its firewall is the admin's
	}
	ifs, err := hostInterfaces()
	if err != nil {
		return err
	}
	if err := rec.Record(jobstate.Resource{Kind: KindForwarding, Name: "ipv4", Attrs: map[string]string{"state_dir": dir}}); err != nil {
		return fmt.Errorf("record forwarding: %w", err)
	}
	if err := os.WriteFile(owned, []byte(strings.Join(ifs, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("netguard: %w", err)
	}
	if err := installForwardConfinement(ifs); err != nil {
		os.Remove(owned)
		return err
	}
	if err := os.WriteFile(ipForwardSysctl, []byte("1"), 0o644); err != nil {
		return errors.Join(fmt.Errorf("enable %s: %w", ipForwardSysctl, err), restoreForwarding(dir))
	}
	return nil
}

// hostInterfaces are the names of the host's interfaces but loopback and
// job veths, sorted.
func hostInterfaces() ([]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host interfaces: %w", err)
	}
	var out []string
	for _, l := range links {
		n := l.Attrs().Name
		if n != "lo" && !strings.HasPrefix(n, vethPrefix) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// installForwardConfinement drops forwarded packets between two of ifs:
// iifname @host oifname @host drop.
func installForwardConfinement(ifs []string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: fwdTable})
	set := &nftables.Set{Table: t, Name: "host", KeyType: nftables.TypeIFName}
	els := make([]nftables.SetElement, len(ifs))
	for i, n := range ifs {
		els[i] = nftables.SetElement{Key: ifname(n)}
	}
	if err := c.AddSet(set, els); err != nil {
		return fmt.Errorf("nftables table %s: %w", fwdTable, err)
	}
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "fwd", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-10), Policy: &accept})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables table %s: %w", fwdTable, err)
	}
	return nil
}

// restoreForwarding undoes ownForwarding: forwarding goes off only if it is
// still on and the host has no interface it lacked when netguard turned it
// on; otherwise it is left on, handed over to whoever came to need it.
// Either way the confinement table and the claim go.
func restoreForwarding(dir string) error {
	owned := filepath.Join(dir, "forwarding-owned")
	b, err := os.ReadFile(owned)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netguard: %w", err)
	}
	had := strings.Fields(string(b))
	var errs []error
	if others, err := forwardingUsers(had); err != nil {
		errs = append(errs, err)
	} else if len(others) == 0 {
		if err := os.WriteFile(ipForwardSysctl, []byte("0"), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("disable %s: %w", ipForwardSysctl, err))
		}
	}
	if err := hostnet.DeleteTable(fwdTable); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		if err := os.Remove(owned); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// forwardingUsers returns why forwarding must stay on: it is off already
// (someone else's choice: nothing to undo), or interfaces that appeared
// since netguard turned it on (job veths of other state dirs included).
func forwardingUsers(had []string) ([]string, error) {
	cur, err := os.ReadFile(ipForwardSysctl)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ipForwardSysctl, err)
	}
	if strings.TrimSpace(string(cur)) != "1" {
		return []string{"ip_forward=" + strings.TrimSpace(string(cur))}, nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list host interfaces: %w", err)
	}
	var out []string
	for _, l := range links {
		// A released job veth the kernel is still removing forwards nothing.
		if n := l.Attrs().Name; n != "lo" && !slices.Contains(had, n) && !(strings.HasPrefix(n, vethPrefix) && released(l)) {
			out = append(out, n)
		}
	}
	return out, nil
}

// releaseLease removes a lease; the last one restores forwarding and
// removes node routes.
func releaseLease(dir string, slot int) error {
	return withLock(dir, func() error {
		if err := os.Remove(leasePath(dir, slot)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("netguard lease: %w", err)
		}
		left, err := os.ReadDir(filepath.Join(dir, "leases"))
		if err != nil {
			return fmt.Errorf("netguard leases: %w", err)
		}
		if len(left) == 0 {
			return lastOut(dir)
		}
		return syncAllocations(dir)
	})
}

// lastOut undoes the host state of the jobs of dir once none is left:
// forwarding and node routes. It runs under the state lock.
func lastOut(dir string) error {
	left, err := os.ReadDir(filepath.Join(dir, "leases"))
	if err != nil {
		return fmt.Errorf("netguard leases: %w", err)
	}
	if len(left) > 0 {
		return nil
	}
	return errors.Join(restoreForwarding(dir), removeNodeRoutes(dir))
}

// linkExists reports whether the caller's namespace has a link of that name.
func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}
