package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"
)

// TestPostgresInNetns starts Postgres inside a throwaway network namespace:
// it serves on the namespace's loopback, not on the host's.
func TestPostgresInNetns(t *testing.T) {
	RequireRoot(t)
	ip := LookPath(t, "ip")
	ns := "st-pgtest-" + RandomID(3)
	if out, err := exec.Command(ip, "netns", "add", ns).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command(ip, "netns", "del", ns).Run() })
	if out, err := exec.Command(ip, "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	pg := PostgresWith(t, PGOptions{NetNS: "/run/netns/" + ns})
	var n int
	if err := pg.Conn(t).QueryRow(context.Background(), "SELECT count(*) FROM dataset").Scan(&n); err != nil || n != 5 {
		t.Fatalf("dataset over the unix socket: %d rows, %v", n, err)
	}
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", pg.Port), time.Second)
	if err == nil {
		c.Close()
		t.Errorf("postgres in netns %s is reachable on the host's loopback port %d", ns, pg.Port)
	}
}
