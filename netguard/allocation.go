package netguard

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
)

// An allocation's address on a node is a pure function of the node's job
// subnet and the allocation id, so every node computes every other node's
// without a coordinator: rank 0's rendezvous on node A is reached from node
// B by node A's name, which the job's /etc/hosts maps to that address.
// A numeric id (Slurm's) takes slot id mod slots, so consecutive
// allocations never share one until the ids wrap around the subnet; any
// other id is hashed.

// AllocationSlot is the /30 slot of pool that the allocation's first job on
// a node takes.
func AllocationSlot(pool netip.Prefix, allocation string) int {
	n := poolSlots(pool)
	if n == 0 {
		return 0
	}
	if v, err := strconv.ParseUint(allocation, 10, 64); err == nil {
		return int(v % uint64(n))
	}
	h := fnv.New64a()
	h.Write([]byte(allocation))
	return int(h.Sum64() % uint64(n))
}

// AllocationAddr is the job address of the allocation's slot in pool (a
// node's job subnet).
func AllocationAddr(pool netip.Prefix, allocation string) (netip.Addr, error) {
	if !pool.IsValid() || !pool.Addr().Is4() || pool.Bits() > 30 {
		return netip.Addr{}, fmt.Errorf("job subnet %s: allowed an IPv4 CIDR of /30 or wider", pool)
	}
	return slotJobAddr(pool.Masked(), AllocationSlot(pool.Masked(), allocation)), nil
}

// slotJobAddr is the job's address in a slot: network, host end, job end.
func slotJobAddr(pool netip.Prefix, slot int) netip.Addr {
	return slotSubnet(pool, slot).Addr().Next().Next()
}

// slotSubnet is the /30 of a slot.
func slotSubnet(pool netip.Prefix, slot int) netip.Prefix {
	b := pool.Masked().Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += uint32(slot) * 4
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 30)
}
