package netguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/securetrain/securetrain/internal/hostnet"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/violation"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named network namespaces are mounted (as by ip netns).
const netnsDir = hostnet.NetnsDir

// JobIfName is the job's interface inside its namespace (what gVisor sees).
const JobIfName = "eth0"

// maxDistinct bounds the distinct violations and contacts kept per job.
const maxDistinct = 4096

// budgetPoll is how often the egress byte counters are read for the budget.
const budgetPoll = 250 * time.Millisecond

// Guard is one job's network confinement. Close undoes it.
type Guard struct {
	cfg      Config
	log      *slog.Logger
	slot     int
	subnet   netip.Prefix
	hostAddr netip.Addr // host end of the veth; the DNS proxy
	jobAddr  netip.Addr
	nsName   string
	hostIf   string
	table    string
	group    uint16

	nftMu sync.Mutex
	nft   *nftables.Conn
	sets  map[string]*nftables.Set
	tbl   *nftables.Table

	proxy *dnsProxy
	nflog *nflogReader
	viol  chan violation.Violation

	mu       sync.Mutex
	seen     map[string]bool
	contacts map[string]*Contact
	names    map[netip.Addr]string
	dropped  int
	final    map[string]uint64 // egress bytes read at Close
	finalRef *Refused          // refusals read at Close

	undo      []func() error // cleanup stack, run in reverse by Close
	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Setup builds the job's network: lease, netns, veth, nftables table, NFLOG
// subscription and DNS proxy, recording each resource with rec before
// creating it. On any error everything done so far is undone.
func Setup(ctx context.Context, cfg Config, rec jobstate.Recorder) (_ *Guard, err error) {
	cfg, err = cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	for _, r := range cfg.Allow {
		if r.AllowsAll() {
			cfg.Logger.Warn("netguard: unrestricted egress: the job may contact any host except the always-denied ones", "job", cfg.JobID, "entry", r.String())
		}
	}
	g := &Guard{cfg: cfg, log: cfg.Logger.With("job", cfg.JobID), nsName: NamePrefix + cfg.JobID,
		table: NamePrefix + cfg.JobID, viol: make(chan violation.Violation, 64),
		seen: map[string]bool{}, contacts: map[string]*Contact{}, names: map[netip.Addr]string{},
		stop: make(chan struct{})}
	defer func() {
		if err != nil {
			err = errors.Join(err, g.Close())
		}
	}()
	step := func(what string, f func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := f(); err != nil {
			return fmt.Errorf("netguard %s: %w", what, err)
		}
		g.log.Debug("netguard step done", "step", what, "took", time.Since(t0))
		return nil
	}
	if err := step("lease", g.lease(rec)); err != nil {
		return nil, err
	}
	if err := step("netns", g.makeNetns(rec)); err != nil {
		return nil, err
	}
	if err := step("veth", g.makeVeth(rec)); err != nil {
		return nil, err
	}
	if err := step("nftables", g.makeTable(rec)); err != nil {
		return nil, err
	}
	if cfg.Allocation != "" {
		if cfg.AllocationIndex >= max(cfg.AllocationBlock, 1) && len(cfg.Peers) > 0 {
			g.log.Warn("netguard: the job's task index lies outside its allocation's block: its allocation's jobs on this node reach it, other nodes do not (raise network.allocation_block)",
				"allocation", cfg.Allocation, "index", cfg.AllocationIndex, "block", max(cfg.AllocationBlock, 1))
		}
		// Join: the allocation's jobs here and this one learn each other.
		if err := step("allocation", func() error { return withLock(cfg.StateDir, func() error { return syncAllocations(cfg.StateDir) }) }); err != nil {
			return nil, err
		}
	}
	if err := step("nflog", g.openLog); err != nil {
		return nil, err
	}
	if err := step("dns proxy", g.startProxy); err != nil {
		return nil, err
	}
	if cfg.EgressBudget > 0 {
		g.wg.Add(1)
		go g.watchBudget()
	}
	g.log.Info("netguard ready", "netns", g.nsName, "veth", g.hostIf, "addr", g.jobAddr, "mode", cfg.Mode, "nflog_group", g.group)
	return g, nil
}

func (g *Guard) push(f func() error) { g.undo = append(g.undo, f) }

func (g *Guard) lease(rec jobstate.Recorder) func() error {
	return func() error {
		slot, err := acquireLease(g.cfg, rec)
		if err != nil {
			return err
		}
		g.slot = slot
		g.push(func() error { return releaseLease(g.cfg.StateDir, slot) })
		g.subnet = slotSubnet(g.cfg.Pool, slot)
		g.hostAddr = g.subnet.Addr().Next()
		g.jobAddr = g.hostAddr.Next()
		g.hostIf = vethPrefix + strconv.FormatInt(int64(slot), 16)
		g.group = g.cfg.NFLogGroup + uint16(slot)
		return nil
	}
}

func (g *Guard) makeNetns(rec jobstate.Recorder) func() error {
	return func() error {
		if err := rec.Record(jobstate.Resource{Kind: KindNetns, Name: g.nsName}); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		if err := hostnet.NewNamedNetns(g.nsName); err != nil {
			return err
		}
		g.push(func() error { return hostnet.DeleteNetns(g.nsName) })
		return nil
	}
}

func (g *Guard) makeVeth(rec jobstate.Recorder) func() error {
	return func() error {
		if err := rec.Record(jobstate.Resource{Kind: KindVeth, Name: g.hostIf}); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		ns, err := netns.GetFromName(g.nsName)
		if err != nil {
			return err
		}
		defer ns.Close()
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: g.hostIf}, PeerName: JobIfName,
			PeerNamespace: netlink.NsFd(int(ns))}
		err = netlink.LinkAdd(veth)
		if errors.Is(err, unix.EEXIST) && releasedVeth(g.hostIf) {
			// The slot is ours (leased under the lock) and a link of its
			// name is down: an earlier job's that the kernel has not yet
			// removed (releaseVeth). Remove it and retry. A link that is
			// up is not ours to remove.
			if err = hostnet.DeleteLink(g.hostIf); err == nil {
				err = netlink.LinkAdd(veth)
			}
		}
		if err != nil {
			return fmt.Errorf("add veth %s: %w", g.hostIf, err)
		}
		g.push(g.releaseVeth)
		// Host end: no IPv6 (jobs are IPv4 only), the proxy's address.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+g.hostIf+"/disable_ipv6", []byte("1"), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		host, err := netlink.LinkByName(g.hostIf)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(host, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(g.hostAddr, 30))}); err != nil {
			return fmt.Errorf("address %s on %s: %w", g.hostAddr, g.hostIf, err)
		}
		if err := netlink.LinkSetUp(host); err != nil {
			return err
		}
		// Job end, configured from outside through a handle in the netns.
		h, err := netlink.NewHandleAt(ns)
		if err != nil {
			return err
		}
		defer h.Close()
		lo, err := h.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := h.LinkSetUp(lo); err != nil {
			return err
		}
		job, err := h.LinkByName(JobIfName)
		if err != nil {
			return err
		}
		if err := h.AddrAdd(job, &netlink.Addr{IPNet: ipnet(netip.PrefixFrom(g.jobAddr, 30))}); err != nil {
			return fmt.Errorf("address %s in netns: %w", g.jobAddr, err)
		}
		if err := h.LinkSetUp(job); err != nil {
			return err
		}
		if err := h.RouteAdd(&netlink.Route{LinkIndex: job.Attrs().Index, Gw: net.IP(g.hostAddr.AsSlice())}); err != nil {
			return fmt.Errorf("default route in netns: %w", err)
		}
		return nil
	}
}

// releaseVeth cuts the host end (down, no address: no route, no traffic)
// and deletes the job's namespace, which takes the veth pair with it: the
// kernel removes both ends once the namespace's last reference goes,
// outside the job's teardown (deleting the veth here waits ~25 ms for an
// RCU grace period). A namespace some process still holds keeps a veth
// that is down; the next job of the slot removes it (makeVeth), and
// acquireLease prefers slots without one.
func (g *Guard) releaseVeth() error {
	if l, err := netlink.LinkByName(g.hostIf); err == nil {
		if err := netlink.LinkSetDown(l); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("set %s down: %w", g.hostIf, err)
		}
		// Its address goes now, so that the slot is free for the next job.
		as, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("addresses of %s: %w", g.hostIf, err)
		}
		for _, a := range as {
			if err := netlink.AddrDel(l, &a); err != nil && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EADDRNOTAVAIL) {
				return fmt.Errorf("remove %s from %s: %w", a.IPNet, g.hostIf, err)
			}
		}
	} else if !errors.As(err, new(netlink.LinkNotFoundError)) {
		return fmt.Errorf("find link %s: %w", g.hostIf, err)
	}
	return hostnet.DeleteNetns(g.nsName)
}

// releasedVeth reports whether the named link is a veth that is down.
func releasedVeth(name string) bool {
	l, err := netlink.LinkByName(name)
	return err == nil && released(l)
}

// released reports whether l is a veth that is down: a job's, after
// releaseVeth, that the kernel is still removing.
func released(l netlink.Link) bool {
	return l.Type() == "veth" && l.Attrs().Flags&net.FlagUp == 0
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// denyLists are the always-denied prefixes: fixed ones, the host's own
// addresses (the proxy is let through by an earlier rule), and the pool.
func (g *Guard) denyLists() (v4, v6 []netip.Prefix, err error) {
	_, own, err := hostPrefixes()
	if err != nil {
		return nil, nil, err
	}
	v4 = append(append([]netip.Prefix{}, alwaysDenied4...), g.cfg.Pool)
	v6 = append([]netip.Prefix{}, alwaysDenied6...)
	for _, p := range own {
		if p.Addr().Is4() {
			v4 = append(v4, p)
		} else {
			v6 = append(v6, p)
		}
	}
	return v4, v6, nil
}

func (g *Guard) makeTable(rec jobstate.Recorder) func() error {
	return func() error {
		v4, v6, err := g.denyLists()
		if err != nil {
			return err
		}
		pr := buildProgram(g.cfg, plan{Table: g.table, HostIf: g.hostIf, JobAddr: g.jobAddr,
			ProxyAddr: g.hostAddr, LogGroup: g.group, Deny4: v4, Deny6: v6})
		if err := rec.Record(jobstate.Resource{Kind: KindTable, Name: g.table}); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		c, err := nftables.New(nftables.AsLasting())
		if err != nil {
			return err
		}
		g.nft = c
		g.push(func() error { return c.CloseLasting() })
		g.push(func() error { return hostnet.DeleteTable(g.table) })
		g.tbl, g.sets, err = pr.install(c)
		return err
	}
}

func (g *Guard) openLog() error {
	r, err := openNFLog(g.group)
	if err != nil {
		return err
	}
	g.nflog = r
	g.push(r.close)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		r.run(g.onLog)
	}()
	return nil
}

func (g *Guard) startProxy() error {
	v4, _, err := g.denyLists()
	if err != nil {
		return err
	}
	g.proxy = &dnsProxy{rules: g.cfg.Allow, mode: g.cfg.Mode, upstreams: g.cfg.Upstreams,
		minTTL: g.cfg.MinTTL, internal: g.cfg.InternalRanges, denied: v4, log: g.log,
		timeout: 3 * time.Second, add: g.allowAddrs, refused: g.onRefused, resolved: g.onResolved,
		client: g.jobAddr}
	if err := g.proxy.listen(g.hostAddr, g.hostIf); err != nil {
		return err
	}
	g.push(g.proxy.close)
	return nil
}

// allowAddrs puts DNS answers for allow entries into their sets.
func (g *Guard) allowAddrs(rules []int, addrs []netip.Addr, ttl time.Duration) error {
	g.nftMu.Lock()
	defer g.nftMu.Unlock()
	for _, i := range rules {
		s, ok := g.sets[fmt.Sprintf(hostSetFmt, i)]
		if !ok {
			continue // "*": allowed by address rule already
		}
		// Delete first so a repeated answer gets the new timeout; a delete
		// of a missing element fails the batch, so retry with add only.
		els := make([]nftables.SetElement, len(addrs))
		for j, a := range addrs {
			els[j] = nftables.SetElement{Key: a.AsSlice(), Timeout: ttl}
		}
		_ = g.nft.SetDeleteElements(s, els)
		if err := g.nft.SetAddElements(s, els); err != nil {
			return err
		}
		if err := g.nft.Flush(); err != nil {
			if err := g.nft.SetAddElements(s, els); err != nil {
				return err
			}
			if err := g.nft.Flush(); err != nil {
				return fmt.Errorf("set %s: %w", s.Name, err)
			}
		}
	}
	return nil
}

func (g *Guard) action(dropped bool) violation.Action {
	switch {
	case g.cfg.Mode == Enforce:
		return violation.Killed
	case dropped:
		return violation.Blocked
	}
	return violation.Recorded
}

// emit sends v once per key; a full channel drops (and counts) the event.
func (g *Guard) emit(key string, v violation.Violation) {
	g.mu.Lock()
	if g.seen[key] || len(g.seen) >= maxDistinct {
		if !g.seen[key] {
			g.dropped++ // a job spraying distinct names or ports cannot grow memory
		}
		g.mu.Unlock()
		return
	}
	g.seen[key] = true
	g.mu.Unlock()
	v.Job, v.Time = g.cfg.JobID, time.Now()
	select {
	case g.viol <- v:
	default:
		g.mu.Lock()
		g.dropped++
		g.mu.Unlock()
	}
	g.log.Warn("netguard violation", "kind", v.Kind, "proto", v.Proto, "dest", v.Dest, "port", v.Port, "action", v.Action)
}

var logDetail = map[string]string{
	logAlways: "always-denied destination: metadata, host, other jobs, multicast or IPv6",
	logDNS:    "DNS to a server other than the job's proxy",
	logAudit:  "audit mode: new destination",
	logFull:   fmt.Sprintf("egress accounting could not count it (more than %d destinations, or its table busy growing)", egressSetSize),
}

func (g *Guard) onLog(ev logEvent) {
	g.mu.Lock()
	k := contactKey(ev.Proto, ev.Dst, ev.Port)
	if _, ok := g.contacts[k]; !ok && len(g.contacts) < maxDistinct {
		g.contacts[k] = &Contact{Proto: ev.Proto, Addr: ev.Dst, Port: ev.Port, Name: g.names[ev.Dst], First: time.Now(),
			AlwaysDenied: ev.Prefix == logAlways || ev.Prefix == logDNS}
	}
	g.mu.Unlock()
	dest := ev.Dst.String()
	action := g.action(ev.Prefix != logAudit)
	if ev.Prefix == logFull {
		// Allowed, but not countable: dropped, never a kill. The kernel's
		// insert into the accounting set also fails for a moment while it
		// grows its hash table under a burst of new destinations; the
		// sender's retransmission then passes.
		action = violation.Blocked
	}
	g.emit("net/"+k, violation.Violation{Kind: violation.Network, Proto: ev.Proto, Dest: dest, Port: ev.Port,
		Action: action, Detail: logDetail[ev.Prefix]})
}

func (g *Guard) onRefused(name string) {
	g.emit("dns/"+name, violation.Violation{Kind: violation.DNS, Proto: "dns", Dest: name,
		Action: g.action(true), Detail: "lookup refused, not forwarded"})
}

func (g *Guard) onResolved(name string, addrs []netip.Addr) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, a := range addrs {
		if len(g.names) >= maxDistinct {
			return
		}
		g.names[a] = name
	}
}

func (g *Guard) watchBudget() {
	defer g.wg.Done()
	t := time.NewTicker(budgetPoll)
	defer t.Stop()
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		var total uint64
		for _, b := range g.EgressBytes() {
			total += b
		}
		if total > uint64(g.cfg.EgressBudget) {
			g.emit("budget", violation.Violation{Kind: violation.EgressBytes, Limit: "network.egress_budget",
				Measured: float64(total), Threshold: float64(g.cfg.EgressBudget), Unit: " bytes",
				Action: g.action(false)})
			return
		}
	}
}

// Violations delivers violation events: network (NFLOG), dns (refused
// lookups), egress_bytes (budget). In audit mode they carry Action Recorded.
// The channel is never closed; events beyond its buffer are dropped (the
// first ones matter: enforce kills on the first).
func (g *Guard) Violations() <-chan violation.Violation { return g.viol }

// Dropped is the number of violation events not delivered: the channel was
// full, or the job produced more than maxDistinct distinct ones.
func (g *Guard) Dropped() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dropped
}

// Contacted returns every destination logged so far (audit: all new
// destinations outside the allowlist; other modes: the denied ones).
func (g *Guard) Contacted() []Contact {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Contact, 0, len(g.contacts))
	for _, c := range g.contacts {
		cc := *c
		if cc.Name == "" {
			cc.Name = g.names[cc.Addr]
		}
		out = append(out, cc)
	}
	return out
}

// EgressBytes returns bytes sent by the job per destination address (packets
// the rules accepted, DNS to the proxy excluded). After Close it returns the
// figures read at Close.
func (g *Guard) EgressBytes() map[string]uint64 {
	out := map[string]uint64{}
	g.nftMu.Lock()
	defer g.nftMu.Unlock()
	if g.final != nil {
		return maps.Clone(g.final)
	}
	s := g.sets[setEgress]
	if g.nft == nil || s == nil {
		return out
	}
	els, err := g.nft.GetSetElements(s)
	if err != nil {
		g.log.Warn("read egress counters", "err", err)
		return out
	}
	for _, e := range els {
		a, ok := netip.AddrFromSlice(e.Key)
		if ok && e.Counter != nil {
			out[a.String()] += e.Counter.Bytes
		}
	}
	return out
}

// Refused is what the job's boundary turned away that was not the job's
// doing: none of it is a violation of the job.
type Refused struct {
	// Inbound packets to the job from anyone but its peers on the peer
	// ports (host processes of any user, other jobs, other hosts), replies
	// to the job's own connections excepted.
	Inbound uint64 `json:"inbound_packets"`
	// ProxyPackets are DNS packets to the job's proxy that did not arrive
	// on the job's veth (dropped by the kernel); ProxyQueries are queries
	// that reached the proxy from an address other than the job's.
	ProxyPackets uint64 `json:"proxy_packets"`
	ProxyQueries uint64 `json:"proxy_queries"`
}

// Refused reads the kernel's counters of what was turned away on its way
// to the job or its proxy. After Close it returns the figures read at Close.
func (g *Guard) Refused() Refused {
	g.nftMu.Lock()
	defer g.nftMu.Unlock()
	if g.finalRef != nil {
		return *g.finalRef
	}
	var r Refused
	if g.proxy != nil {
		r.ProxyQueries = g.proxy.foreign.Load()
	}
	if g.nft == nil || g.tbl == nil {
		return r
	}
	objs, err := g.nft.GetObjects(g.tbl)
	if err != nil {
		g.log.Warn("read refusal counters", "err", err)
		return r
	}
	for _, o := range objs {
		c, ok := o.(*nftables.CounterObj)
		if !ok {
			continue
		}
		switch c.Name {
		case counterInRefused:
			r.Inbound = c.Packets
		case counterProxyRefused:
			r.ProxyPackets = c.Packets
		}
	}
	return r
}

// NetnsPath is the namespace to name in the OCI spec (linux.namespaces).
func (g *Guard) NetnsPath() string { return filepath.Join(netnsDir, g.nsName) }

// JobAddr is the job's address inside its namespace.
func (g *Guard) JobAddr() netip.Addr { return g.jobAddr }

// ProxyAddr is the DNS proxy's address (the host end of the veth).
func (g *Guard) ProxyAddr() netip.Addr { return g.hostAddr }

// HostIf is the host end of the job's veth.
func (g *Guard) HostIf() string { return g.hostIf }

// Table is the job's nftables table (family inet).
func (g *Guard) Table() string { return g.table }

// ResolvConf is the sandbox's /etc/resolv.conf: the proxy only, no search.
func (g *Guard) ResolvConf() []byte {
	return []byte("nameserver " + g.hostAddr.String() + "\noptions ndots:1 timeout:2 attempts:2\n")
}

// Hosts is the job's /etc/hosts: localhost, the job's own address under
// hostname (first, so a reverse lookup of the address, as torchrun's
// getfqdn does, gives hostname back; "securetrain-job" when empty), then
// Config.HostNames. The DNS proxy answers these names itself from then on
// (their missing IPv6 addresses, reverse lookups).
func (g *Guard) Hosts(hostname string) []byte {
	if hostname == "" {
		hostname = "securetrain-job"
	}
	local := maps.Clone(g.cfg.HostNames)
	if local == nil {
		local = map[string]netip.Addr{}
	}
	local[hostname] = g.jobAddr
	if g.proxy != nil {
		g.proxy.setLocal(local)
	}
	b := []byte("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" +
		g.jobAddr.String() + "\t" + hostname + "\n")
	for _, name := range slices.Sorted(maps.Keys(g.cfg.HostNames)) {
		if name != hostname {
			b = append(b, g.cfg.HostNames[name].String()+"\t"+name+"\n"...)
		}
	}
	return b
}

// Env is what distributed training needs to pick the job's interface.
func (g *Guard) Env() map[string]string {
	return map[string]string{
		"GLOO_SOCKET_IFNAME": JobIfName,
		"NCCL_SOCKET_IFNAME": JobIfName,
		"TP_SOCKET_IFNAME":   JobIfName,
		"NCCL_IB_DISABLE":    "1", // gVisor has no RDMA
	}
}

// Close removes everything Setup made, in reverse order, joining errors. It
// is safe to call more than once.
func (g *Guard) Close() error {
	g.closeOnce.Do(func() {
		close(g.stop)
		final, ref := g.EgressBytes(), g.Refused()
		g.nftMu.Lock()
		g.final, g.finalRef = final, &ref
		g.nftMu.Unlock()
		if ref != (Refused{}) {
			g.log.Info("netguard: refused what was not the job's", "inbound_packets", ref.Inbound,
				"proxy_packets", ref.ProxyPackets, "proxy_queries", ref.ProxyQueries)
		}
		var errs []error
		t0 := time.Now()
		for i := len(g.undo) - 1; i >= 0; i-- {
			if err := g.undo[i](); err != nil {
				errs = append(errs, err)
			}
		}
		g.wg.Wait()
		g.log.Debug("netguard closed", "took", time.Since(t0))
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}
