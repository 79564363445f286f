// Package nettest is test support for network confinement: a small "world"
// of test hosts that a job's egress rules are checked against, shared by
// netguard's kernel-tier tests and the end-to-end tests of the built binary.
//
// A World holds an "allowed" and an "evil" server, each in its own network
// namespace reached from the host through a veth (TCP on ports 8080, 9090
// and 53; the evil one also has an IPv6 address), a test upstream DNS
// resolver on loopback that records every name it is asked, and a backstop
// nftables table that drops any packet from a job veth routed anywhere but
// the test ranges (10.208.0.0/12), so that a confinement bug cannot send
// test traffic off the machine. Everything is removed at the test's cleanup.
//
// Worlds of test packages that may run at the same time (go test ./...) must
// use different Options.Octet values. The package imports nothing of the
// module; it is for _test.go files only.
package nettest
