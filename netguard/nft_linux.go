package netguard

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// install programs the whole table in one netlink batch: the kernel applies
// all of it or nothing.
func (pr program) install(c *nftables.Conn) (*nftables.Table, map[string]*nftables.Set, error) {
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: pr.Table})
	for _, n := range pr.Counters {
		c.AddObj(&nftables.CounterObj{Table: t, Name: n})
	}
	sets := map[string]*nftables.Set{}
	for _, s := range pr.Sets {
		ns := &nftables.Set{Table: t, Name: s.Name, KeyType: nftables.TypeIPAddr,
			Interval: s.Interval, HasTimeout: s.Timeout, Dynamic: s.Dynamic}
		if s.Family == 6 {
			ns.KeyType = nftables.TypeIP6Addr
		}
		if s.Dynamic {
			ns.Size = egressSetSize
		}
		if err := c.AddSet(ns, intervalElems(s)); err != nil {
			return nil, nil, fmt.Errorf("nftables set %s: %w", s.Name, err)
		}
		sets[s.Name] = ns
	}
	chains := map[string]*nftables.Chain{}
	accept := nftables.ChainPolicyAccept
	for _, cs := range pr.Chains {
		ch := &nftables.Chain{Name: cs.Name, Table: t}
		if cs.Hook != "" {
			ch.Type = nftables.ChainTypeFilter
			if cs.Type == "nat" {
				ch.Type = nftables.ChainTypeNAT
			}
			ch.Hooknum = map[string]*nftables.ChainHook{
				"prerouting": nftables.ChainHookPrerouting, "input": nftables.ChainHookInput,
				"forward": nftables.ChainHookForward, "output": nftables.ChainHookOutput,
				"postrouting": nftables.ChainHookPostrouting}[cs.Hook]
			ch.Priority = nftables.ChainPriorityRef(nftables.ChainPriority(cs.Priority))
			ch.Policy = &accept
		}
		chains[cs.Name] = c.AddChain(ch)
	}
	for _, cs := range pr.Chains {
		for _, m := range cs.Rules {
			ex, err := m.exprs(pr.LogGroup, sets)
			if err != nil {
				return nil, nil, fmt.Errorf("nftables chain %s rule %q: %w", cs.Name, m.render(pr.LogGroup), err)
			}
			r := &nftables.Rule{Table: t, Chain: chains[cs.Name], Exprs: ex}
			if m.Comment != "" {
				r.UserData = userdata.AppendString(nil, userdata.TypeComment, m.Comment)
			}
			c.AddRule(r)
		}
	}
	if err := c.Flush(); err != nil {
		return nil, nil, fmt.Errorf("nftables table %s: %w", pr.Table, err)
	}
	return t, sets, nil
}

func intervalElems(s setSpec) []nftables.SetElement {
	var els []nftables.SetElement
	for _, r := range mergePrefixes(s.Elems) {
		els = append(els, nftables.SetElement{Key: r.From.AsSlice()})
		if end := r.To.Next(); end.IsValid() {
			els = append(els, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
		}
	}
	return els
}

func ifname(s string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, s)
	return b
}

var ctBits = map[string]uint32{"invalid": expr.CtStateBitINVALID, "established": expr.CtStateBitESTABLISHED,
	"related": expr.CtStateBitRELATED, "new": expr.CtStateBitNEW}

var l4num = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmpv6": unix.IPPROTO_ICMPV6}

// exprs compiles one match. Conditions come in the order render prints them.
func (m match) exprs(group uint16, sets map[string]*nftables.Set) ([]expr.Any, error) {
	var e []expr.Any
	meta := func(k expr.MetaKey, op expr.CmpOp, data []byte) {
		e = append(e, &expr.Meta{Key: k, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: data})
	}
	if m.IIf != "" {
		meta(expr.MetaKeyIIFNAME, expr.CmpOpEq, ifname(m.IIf))
	}
	if m.OIf != "" {
		meta(expr.MetaKeyOIFNAME, expr.CmpOpEq, ifname(m.OIf))
	}
	if m.NotIIf != "" {
		meta(expr.MetaKeyIIFNAME, expr.CmpOpNeq, ifname(m.NotIIf))
	}
	if m.NotOIf != "" {
		meta(expr.MetaKeyOIFNAME, expr.CmpOpNeq, ifname(m.NotOIf))
	}
	switch m.Family {
	case 4:
		meta(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})
	case 6:
		meta(expr.MetaKeyNFPROTO, expr.CmpOpEq, []byte{unix.NFPROTO_IPV6})
	}
	addr := func(p netip.Prefix, src bool, op expr.CmpOp) {
		off, n := uint32(16), uint32(4)
		if src {
			off = 12
		}
		if p.Addr().Is6() {
			off, n = 24, 16
			if src {
				off = 8
			}
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n})
		if p.Bits() < p.Addr().BitLen() {
			e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n,
				Mask: prefixMask(p), Xor: make([]byte, n)})
		}
		e = append(e, &expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()})
	}
	if m.NotSaddr.IsValid() {
		addr(m.NotSaddr, true, expr.CmpOpNeq)
	}
	if m.Saddr.IsValid() {
		addr(m.Saddr, true, expr.CmpOpEq)
	}
	if m.Daddr.IsValid() {
		addr(m.Daddr, false, expr.CmpOpEq)
	}
	lookup := func(name string, src bool) error {
		s, ok := sets[name]
		if !ok {
			return fmt.Errorf("no set %s", name)
		}
		off, n := uint32(16), uint32(4)
		if s.KeyType == nftables.TypeIP6Addr {
			off, n = 24, 16
		}
		if src {
			off -= n
		}
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
			&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
		return nil
	}
	if m.SaddrSet != "" {
		if err := lookup(m.SaddrSet, true); err != nil {
			return nil, err
		}
	}
	if m.DaddrSet != "" {
		if err := lookup(m.DaddrSet, false); err != nil {
			return nil, err
		}
	}
	if len(m.CTState) > 0 {
		var bits uint32
		for _, s := range m.CTState {
			bits |= ctBits[s]
		}
		e = append(e, &expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: binaryutil.NativeEndian.PutUint32(0)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}})
	}
	if m.L4 != "" {
		p, ok := l4num[m.L4]
		if !ok {
			return nil, fmt.Errorf("unknown protocol %q", m.L4)
		}
		meta(expr.MetaKeyL4PROTO, expr.CmpOpEq, []byte{p})
	}
	if m.PortLo != 0 {
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		if m.PortLo == m.PortHi {
			e = append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(m.PortLo)})
		} else {
			e = append(e, &expr.Range{Op: expr.CmpOpEq, Register: 1,
				FromData: binaryutil.BigEndian.PutUint16(m.PortLo), ToData: binaryutil.BigEndian.PutUint16(m.PortHi)})
		}
	}
	if m.Accounting {
		s := sets[setEgress]
		e = append(e, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: uint32(unix.NFT_DYNSET_OP_UPDATE),
				Exprs: []expr.Any{&expr.Counter{}}})
	}
	if m.Counter != "" {
		e = append(e, &expr.Objref{Type: int(nftables.ObjTypeCounter), Name: m.Counter})
	} else {
		e = append(e, &expr.Counter{})
	}
	if m.Log != "" {
		e = append(e, &expr.Log{Group: group, Data: []byte(m.Log), QThreshold: 1,
			Key: 1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX | 1<<unix.NFTA_LOG_QTHRESHOLD})
	}
	verb, arg, _ := strings.Cut(m.Verdict, " ")
	switch verb {
	case "accept":
		e = append(e, &expr.Verdict{Kind: expr.VerdictAccept})
	case "drop":
		e = append(e, &expr.Verdict{Kind: expr.VerdictDrop})
	case "return":
		e = append(e, &expr.Verdict{Kind: expr.VerdictReturn})
	case "jump":
		e = append(e, &expr.Verdict{Kind: expr.VerdictJump, Chain: arg})
	case "goto":
		e = append(e, &expr.Verdict{Kind: expr.VerdictGoto, Chain: arg})
	case "masquerade":
		e = append(e, &expr.Masq{})
	default:
		return nil, fmt.Errorf("unknown verdict %q", m.Verdict)
	}
	return e, nil
}

func prefixMask(p netip.Prefix) []byte {
	b := make([]byte, p.Addr().BitLen()/8)
	for i := 0; i < p.Bits(); i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	return b
}
