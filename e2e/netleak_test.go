package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/securetrain/securetrain/netguard"
	"github.com/vishvananda/netlink"
)

// netLeaks lists what netguard leaves behind a job: job network namespaces,
// job veths, job nftables tables, the forwarding confinement table and
// address leases. (netguard's own kernel tests create the same kinds of
// names: run the root-tier packages one at a time, go test -p 1.)
func netLeaks() []string {
	var left []string
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		if id, ok := strings.CutPrefix(e.Name(), netguard.NamePrefix); ok && isJobID(id) {
			left = append(left, "netns "+e.Name())
		}
	}
	// The kernel removes a job's veth pair with its namespace, moments
	// after the job (netguard's releaseVeth): wait up to 2 s for it.
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		veths := jobVeths()
		if len(veths) == 0 || time.Now().After(deadline) {
			left = append(left, veths...)
			break
		}
	}
	if c, err := nftables.New(); err == nil {
		ts, _ := c.ListTablesOfFamily(nftables.TableFamilyINet)
		for _, t := range ts {
			id, ok := strings.CutPrefix(t.Name, netguard.NamePrefix)
			if ok && (isJobID(id) || t.Name == netguard.ForwardTable) {
				left = append(left, "nftables table inet "+t.Name)
			}
		}
	}
	leases, _ := os.ReadDir(filepath.Join(stateDir, "netguard", "leases"))
	for _, l := range leases {
		left = append(left, "netguard lease "+l.Name())
	}
	if _, err := os.Stat(filepath.Join(stateDir, "netguard", "forwarding-owned")); err == nil {
		left = append(left, "netguard forwarding still owned (net.ipv4.ip_forward)")
	}
	return left
}

func jobVeths() []string {
	var left []string
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, netguard.VethPrefix) {
			left = append(left, "veth "+l.Attrs().Name)
		}
	}
	return left
}
