// Package systemd holds the systemd unit for `securetrain daemon` and the
// tests that keep it valid and free of protections that would break
// namespaces, nftables, cgroups, GPUs or runsc.
package systemd
