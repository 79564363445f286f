package secrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/securetrain/securetrain/jobstate"
)

// Revoke ends the grant: it stops renewal, revokes the job token (Vault then
// revokes every lease it created), checks that the token is gone and its
// leases are revoked, and removes the delivery mount. It is idempotent and
// joins all errors instead of stopping at the first.
func (g *Grant) Revoke(ctx context.Context) error {
	g.revokeMu.Lock()
	defer g.revokeMu.Unlock()
	if g.revoked {
		return nil
	}
	if g.stopWatch != nil {
		g.stopWatch()
		<-g.watchDone
	}
	var errs []error
	if err := g.revokeToken(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := removeTmpfs(g.spec.HostDir); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		g.revoked = true
		g.log.Info("job credentials revoked", "accessor", g.accessor)
	}
	return errors.Join(errs...)
}

// revokeToken revokes the job token and verifies the token and its leases
// are gone.
func (g *Grant) revokeToken(ctx context.Context) error {
	if g.job == nil {
		return nil
	}
	if err := g.job.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		// The token may be expired or revoked already; try by accessor.
		if err := revokeAccessor(ctx, g.c, g.accessor); err != nil {
			return err
		}
	}
	if _, err := g.job.Auth().Token().LookupSelfWithContext(ctx); err == nil {
		return fmt.Errorf("job token %s: %w: lookup still succeeds", g.accessor, ErrRevokeUnverified)
	} else if httpStatus(err) != 403 {
		return fmt.Errorf("job token %s: %w: %w", g.accessor, ErrRevokeUnverified, vaultErr(err))
	}
	ids := make([]string, 0, len(g.leases))
	for _, l := range g.leases {
		ids = append(ids, l.id)
	}
	return waitLeasesGone(ctx, g.c, ids)
}

// revokeAccessor revokes a token by accessor; an unknown accessor is clean.
func revokeAccessor(ctx context.Context, c *Client, accessor string) error {
	err := c.launcherDo(ctx, func(ac *api.Client) error {
		return ac.Auth().Token().RevokeAccessorWithContext(ctx, accessor)
	})
	if err == nil || accessorGone(err) {
		return nil
	}
	return fmt.Errorf("revoke job token %s: %w", accessor, vaultErr(err))
}

func accessorGone(err error) bool {
	return httpStatus(err) == 400 && (vaultSays(err, "invalid accessor") || vaultSays(err, "invalid token"))
}

// waitLeasesGone polls sys/leases/lookup (allowed by Vault's default policy)
// until every lease is revoked: revocation of a token's leases runs in the
// background in Vault, and the database role is dropped before the lease
// disappears.
func waitLeasesGone(ctx context.Context, c *Client, ids []string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for _, id := range ids {
		wait := 20 * time.Millisecond
		for {
			err := c.launcherDo(ctx, func(ac *api.Client) error {
				_, e := ac.Logical().WriteWithContext(ctx, "sys/leases/lookup", map[string]any{"lease_id": id})
				return e
			})
			if err != nil && httpStatus(err) == 400 && vaultSays(err, "invalid lease") {
				break
			}
			if err != nil && httpStatus(err) != 0 {
				return fmt.Errorf("lease %s: %w: %w", id, ErrRevokeUnverified, vaultErr(err))
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("lease %s: %w: still present", id, ErrRevokeUnverified)
			case <-t.C:
			}
			wait = min(wait*2, time.Second)
		}
	}
	return nil
}

// Owns reports whether r is a resource this package records and GC removes.
func Owns(r jobstate.Resource) bool { return r.Kind == KindToken || r.Kind == KindMount }

// Records picks this package's resources out of a job's records, keeps the
// latest record of each (the token record is rewritten as its accessor and
// leases become known) and orders them for GC: tokens, then mounts.
func Records(rs []jobstate.Resource) []jobstate.Resource {
	latest := map[string]int{}
	var out []jobstate.Resource
	for _, r := range rs {
		if !Owns(r) {
			continue
		}
		k := r.Kind + "\x00" + r.Name
		if i, ok := latest[k]; ok {
			out[i] = r
			continue
		}
		latest[k] = len(out)
		out = append(out, r)
	}
	var tokens, mounts []jobstate.Resource
	for _, r := range out {
		if r.Kind == KindToken {
			tokens = append(tokens, r)
		} else {
			mounts = append(mounts, r)
		}
	}
	return append(tokens, mounts...)
}

// ErrNotOurs is returned by GC for a resource of another subsystem.
var ErrNotOurs = errors.New("not a secrets resource")

// GC undoes one recorded resource after a launcher crash: a job token is
// revoked by accessor (an unknown accessor counts as clean) and its leases
// are checked gone; a delivery mount is unmounted and removed. A token
// record without an accessor (crash between token creation and recording)
// cannot be found; that token dies at its TTL. c may be nil for mounts.
func GC(ctx context.Context, c *Client, r jobstate.Resource) error {
	switch r.Kind {
	case KindMount:
		return removeTmpfs(r.Name)
	case KindToken:
		acc := r.Attrs["accessor"]
		if acc == "" {
			return nil
		}
		if c == nil {
			return fmt.Errorf("gc job token %s: %w: no vault client", acc, ErrConfig)
		}
		if err := revokeAccessor(ctx, c, acc); err != nil {
			return fmt.Errorf("gc: %w", err)
		}
		var ids []string
		if l := r.Attrs["leases"]; l != "" {
			ids = strings.Split(l, ",")
		}
		if err := waitLeasesGone(ctx, c, ids); err != nil {
			return fmt.Errorf("gc job token %s: %w", acc, err)
		}
		c.log.Info("gc: job token revoked", "job", r.Name, "accessor", acc)
		return nil
	}
	return fmt.Errorf("gc %s: %w", r, ErrNotOurs)
}
