package netguard

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"
)

// listen starts UDP and TCP servers on addr port 53, bound to the device
// ifname (SO_BINDTODEVICE): a packet to addr that arrives on any other
// interface (loopback, for every host process) never reaches the proxy.
func (p *dnsProxy) listen(addr netip.Addr, ifname string) error {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to device %s: %w", ifname, serr)
		}
		return nil
	}}
	ap := netip.AddrPortFrom(addr, 53).String()
	pc, err := lc.ListenPacket(context.Background(), "udp4", ap)
	if err != nil {
		return fmt.Errorf("dns proxy: %w", err)
	}
	ln, err := lc.Listen(context.Background(), "tcp4", ap)
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns proxy: %w", err)
	}
	p.serve(&dns.Server{PacketConn: pc, Handler: p}, &dns.Server{Listener: ln, Handler: p})
	return nil
}
