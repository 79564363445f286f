// Package hostnet holds the host-side network primitives that netguard and
// the network test world (internal/nettest) both need: named network
// namespaces made without leaving the caller's thread in them, and removal
// of namespaces, links and nftables tables where "already gone" is clean.
package hostnet
