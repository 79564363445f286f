package daemon

import (
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Anyone on the host may connect to the daemon's socket. What a connection
// costs the daemon before it is a running job (a goroutine, a descriptor,
// the request being read and answered) is bounded per uid: at most
// maxPendingPerUID such connections at once (root's are not counted), and
// a connection must send its request within requestTimeout. Past the bound
// a connection is answered with one line and closed, so idle or stalled
// connections (slowloris) of one user never keep others from the daemon.
// A connection whose run was admitted belongs to its job, which the host
// policy and the allocation bound, and no longer counts.
const (
	maxPendingPerUID = 64
	requestTimeout   = 10 * time.Second
)

type connGate struct {
	mu      sync.Mutex
	pending map[int]int // uid -> connections not (yet) a running job
}

func newConnGate() *connGate { return &connGate{pending: map[int]int{}} }

// enter admits one more connection of uid, or refuses it.
func (g *connGate) enter(uid int) error {
	if uid == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending[uid] >= maxPendingPerUID {
		return fmt.Errorf("uid %d has %d connections to the daemon waiting or being answered (at most %d); close some and retry", uid, g.pending[uid], maxPendingPerUID)
	}
	g.pending[uid]++
	return nil
}

// slot returns the release of uid's connection; calling it more than once
// releases once.
func (g *connGate) slot(uid int) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			if uid == 0 {
				return
			}
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.pending[uid]--; g.pending[uid] <= 0 {
				delete(g.pending, uid)
			}
		})
	}
}

// peerUID is the connecting process's uid (SO_PEERCRED, fixed at connect).
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials: %w", cerr)
	}
	return int(cred.Uid), nil
}
