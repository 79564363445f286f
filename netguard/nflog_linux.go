package netguard

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NFLOG over nfnetlink (linux/netfilter/nfnetlink_log.h); x/sys has no
// constants for it and the usual client library is not available here, so
// the few messages are spelled out.
const (
	nfnlSubsysULOG    = 4
	nfulnlMsgPacket   = 0
	nfulnlMsgConfig   = 1
	nfulaCfgCmd       = 1
	nfulaCfgMode      = 2
	nfulaCfgTimeout   = 4
	nfulaCfgQThresh   = 5
	nfulnlCfgCmdBind  = 1
	nfulnlCopyPacket  = 2
	nfulaPacketHdr    = 1
	nfulaPayload      = 9
	nfulaPrefix       = 10
	nflogCopyRange    = 128 // headers are enough
	nflogReadBufBytes = 1 << 20
)

// logEvent is one logged packet, decoded.
type logEvent struct {
	Prefix string
	Proto  string
	Dst    netip.Addr
	Port   int
}

// nflogReader receives the packets that the job's rules log to its group.
type nflogReader struct {
	conn *netlink.Conn
}

func openNFLog(group uint16) (*nflogReader, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("nflog group %d: dial netlink: %w", group, err)
	}
	_ = c.SetReadBuffer(nflogReadBufBytes)
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, nflogCopyRange)
	mode[4] = nfulnlCopyPacket
	for _, attrs := range [][]netlink.Attribute{
		{{Type: nfulaCfgCmd, Data: []byte{nfulnlCfgCmdBind}}},
		{{Type: nfulaCfgMode, Data: mode},
			{Type: nfulaCfgTimeout, Data: binary.BigEndian.AppendUint32(nil, 0)},
			{Type: nfulaCfgQThresh, Data: binary.BigEndian.AppendUint32(nil, 1)}},
	} {
		if err := nflogConfig(c, group, attrs); err != nil {
			c.Close()
			return nil, fmt.Errorf("nflog group %d: %w (is another process bound to it?)", group, err)
		}
	}
	return &nflogReader{conn: c}, nil
}

func nflogConfig(c *netlink.Conn, group uint16, attrs []netlink.Attribute) error {
	ad, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		return err
	}
	hdr := []byte{unix.AF_UNSPEC, 0, byte(group >> 8), byte(group)}
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge},
		Data: append(hdr, ad...),
	})
	return err
}

// run delivers decoded events until the reader is closed.
func (r *nflogReader) run(out func(logEvent)) {
	for {
		msgs, err := r.conn.Receive()
		if err != nil {
			var op *netlink.OpError
			if errors.As(err, &op) && errors.Is(op.Err, unix.ENOBUFS) {
				continue // overrun: some events lost, keep reading
			}
			return // closed
		}
		for _, m := range msgs {
			if m.Header.Type != netlink.HeaderType(nfnlSubsysULOG<<8|nfulnlMsgPacket) || len(m.Data) < 4 {
				continue
			}
			if ev, ok := decodeNFLog(m.Data[4:]); ok {
				out(ev)
			}
		}
	}
}

func (r *nflogReader) close() error { return r.conn.Close() }

func decodeNFLog(b []byte) (logEvent, bool) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return logEvent{}, false
	}
	var ev logEvent
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case nfulaPrefix:
			ev.Prefix = ad.String()
		case nfulaPayload:
			payload = ad.Bytes()
		}
	}
	if ad.Err() != nil || payload == nil {
		return logEvent{}, false
	}
	ev.Proto, ev.Dst, ev.Port = decodePacket(payload)
	return ev, ev.Dst.IsValid()
}

// decodePacket reads protocol, destination and destination port from an IP
// packet's headers.
func decodePacket(p []byte) (proto string, dst netip.Addr, port int) {
	if len(p) < 1 {
		return "", netip.Addr{}, 0
	}
	var l4 byte
	var rest []byte
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 {
			return "", netip.Addr{}, 0
		}
		ihl := int(p[0]&0x0f) * 4
		l4, dst = p[9], netip.AddrFrom4([4]byte(p[16:20]))
		if ihl <= len(p) {
			rest = p[ihl:]
		}
	case 6:
		if len(p) < 40 {
			return "", netip.Addr{}, 0
		}
		l4, dst, rest = p[6], netip.AddrFrom16([16]byte(p[24:40])), p[40:]
	default:
		return "", netip.Addr{}, 0
	}
	switch l4 {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		proto = map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}[l4]
		if len(rest) >= 4 {
			port = int(binary.BigEndian.Uint16(rest[2:4]))
		}
	case unix.IPPROTO_ICMP:
		proto = "icmp"
	case unix.IPPROTO_ICMPV6:
		proto = "icmpv6"
	default:
		proto = fmt.Sprintf("ip-proto-%d", l4)
	}
	return proto, dst, port
}
