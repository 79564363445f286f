package netguard

import (
	"context"
	"fmt"
	"strconv"

	"github.com/securetrain/securetrain/internal/hostnet"
	"github.com/securetrain/securetrain/jobstate"
)

// GC removes what a record names, after a crash; "not found" is clean.
// Records of kinds that are not netguard's are ignored.
func GC(ctx context.Context, r jobstate.Resource) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch r.Kind {
	case KindNetns:
		return hostnet.DeleteNetns(r.Name)
	case KindVeth:
		return hostnet.DeleteLink(r.Name)
	case KindTable:
		return hostnet.DeleteTable(r.Name)
	case KindLease:
		slot, err := strconv.Atoi(r.Attrs["slot"])
		if err != nil || r.Attrs["state_dir"] == "" {
			return fmt.Errorf("netguard gc: lease record %s lacks slot/state_dir", r)
		}
		return releaseLease(r.Attrs["state_dir"], slot)
	case KindForwarding, KindRoute:
		// Undone by the release of the last lease; nothing of its own.
		return nil
	}
	return nil
}
