package netguard

import (
	"fmt"
	"hash/fnv"
	"net/netip"
	"strconv"
)

// An allocation's addresses on a node are a pure function of the node's
// job subnet and the allocation id, so every node computes every other
// node's without a coordinator: rank 0's rendezvous on node A is reached
// from node B by node A's name, which the job's /etc/hosts maps to the
// first of them. An allocation reserves a block of slots on each node (a
// power of two, one per local task: SLURM_LOCALID i takes the block's i-th
// slot). A numeric id (Slurm's) takes block id mod blocks, so consecutive
// allocations never share one until the ids wrap around the subnet; any
// other id is hashed.

// MaxAllocationBlock bounds the slots an allocation reserves per node.
const MaxAllocationBlock = 64

// AllocationSlot is the first /30 slot of the allocation's block in pool
// (block 0 means 1).
func AllocationSlot(pool netip.Prefix, allocation string, block int) int {
	block = max(block, 1)
	n := poolSlots(pool) / block
	if n == 0 {
		return 0
	}
	if v, err := strconv.ParseUint(allocation, 10, 64); err == nil {
		return int(v%uint64(n)) * block
	}
	h := fnv.New64a()
	h.Write([]byte(allocation))
	return int(h.Sum64()%uint64(n)) * block
}

// AllocationAddrs are the job addresses of the allocation's block in pool
// (a node's job subnet), task 0's first: where other nodes reach its jobs.
func AllocationAddrs(pool netip.Prefix, allocation string, block int) ([]netip.Addr, error) {
	block = max(block, 1)
	if !pool.IsValid() || !pool.Addr().Is4() || pool.Bits() > 30 {
		return nil, fmt.Errorf("job subnet %s: allowed an IPv4 CIDR of /30 or wider", pool)
	}
	if block&(block-1) != 0 || block > MaxAllocationBlock || block > poolSlots(pool) {
		return nil, fmt.Errorf("allocation block %d: allowed a power of two up to %d and to the %d slots of %s", block, MaxAllocationBlock, poolSlots(pool), pool)
	}
	pool = pool.Masked()
	base := AllocationSlot(pool, allocation, block)
	out := make([]netip.Addr, block)
	for i := range out {
		out[i] = slotJobAddr(pool, base+i)
	}
	return out, nil
}

// AllocationAddr is the job address of the allocation's task 0 in pool.
func AllocationAddr(pool netip.Prefix, allocation string, block int) (netip.Addr, error) {
	as, err := AllocationAddrs(pool, allocation, block)
	if err != nil {
		return netip.Addr{}, err
	}
	return as[0], nil
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
