package netguard

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/securetrain/securetrain/internal/hostnet"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Check reports whether this host can run netguard: nf_tables over netlink,
// network namespaces and veth pairs (tried in a throwaway namespace), host
// firewall chains whose drop policy would break job traffic, and IPv4
// forwarding the host had on before netguard (stateDir: Config.StateDir;
// empty means the default).
func Check(stateDir string) []CheckResult {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	var out []CheckResult
	c, err := nftables.New()
	if err == nil {
		_, err = c.ListTables()
	}
	out = append(out, result("nf_tables", err, "nf_tables answers over netlink", "load the nf_tables module (modprobe nf_tables) and run as root"))

	name := fmt.Sprintf("securetrain-check-%d", os.Getpid())
	err = hostnet.NewNamedNetns(name)
	out = append(out, result("netns", err, "network namespaces can be created", "run as root with /var/run/netns writable"))
	if err == nil {
		ns, nerr := netns.GetFromName(name)
		if nerr == nil {
			var h *netlink.Handle
			if h, nerr = netlink.NewHandleAt(ns); nerr == nil {
				nerr = h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "chk0"}, PeerName: "chk1"})
				h.Close()
			}
			ns.Close()
		}
		out = append(out, result("veth", nerr, "veth pairs can be created", "load the veth module (modprobe veth)"))
		_ = hostnet.DeleteNetns(name)
	}

	if c != nil {
		if chains, err := c.ListChains(); err == nil {
			var bad []string
			for _, ch := range chains {
				if ch.Hooknum == nil || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop || ch.Type == nftables.ChainTypeNAT {
					continue
				}
				switch *ch.Hooknum {
				case *nftables.ChainHookForward, *nftables.ChainHookInput, *nftables.ChainHookPrerouting, *nftables.ChainHookPostrouting:
					bad = append(bad, fmt.Sprintf("%s %s/%s", family(ch.Table.Family), ch.Table.Name, ch.Name))
				}
			}
			ok := len(bad) == 0
			detail := "no base chain with policy drop on forward/input hooks"
			if !ok {
				detail = "policy drop in " + strings.Join(bad, ", ") +
					`: accept iifname/oifname "stg*" there (job veths), and udp/tcp dport 53 on input, or job traffic and DNS are dropped`
			}
			out = append(out, CheckResult{Name: "host firewall", OK: ok, Detail: detail})
		}
	}
	if b, err := os.ReadFile(ipForwardSysctl); err == nil && strings.TrimSpace(string(b)) == "1" {
		if _, err := os.Stat(stateDir + "/forwarding-owned"); err != nil {
			out = append(out, CheckResult{Name: "ip forwarding", OK: true,
				Detail: "net.ipv4.ip_forward is already 1: the host routes for its own interfaces; netguard leaves that to the host firewall"})
		}
	}
	return out
}

func result(name string, err error, ok, fix string) CheckResult {
	if err != nil {
		return CheckResult{Name: name, OK: false, Detail: fmt.Sprintf("%v: %s", err, fix)}
	}
	return CheckResult{Name: name, OK: true, Detail: ok}
}

func family(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprintf("family-%d", f)
}
