package daemon

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/launcher"
)

// ErrDenied is wrapped by every refusal the host policy makes.
var ErrDenied = errors.New("refused by the host policy")

// Identity is a caller as the kernel (SO_PEERCRED) and NSS describe it.
type Identity struct {
	UID, GID, PID int
	Name, Home    string
	Groups        []int    // supplementary gids, from NSS
	GroupNames    []string // names of GID and Groups
	Admin         bool     // root, or a member of daemon.admin_groups
}

// Root reports whether the caller is root.
func (id Identity) Root() bool { return id.UID == 0 }

// viewer is the caller as the launcher's ps, logs and kill see it.
func (id Identity) viewer() launcher.Viewer { return launcher.Viewer{UID: id.UID, Admin: id.Admin} }

// isAdmin reports whether the caller is root or in an admin group.
func isAdmin(uid int, groupNames, adminGroups []string) bool {
	if uid == 0 {
		return true
	}
	for _, g := range groupNames {
		if slices.Contains(adminGroups, g) {
			return true
		}
	}
	return false
}

// Decision is what the policy allows for one run.
type Decision struct {
	Profile *configs.Profile // with the overrides applied
	Rule    int              // index of the deciding policy rule, -1 for admins
}

// ProfileReader reads a profile file named by an admin caller, with the
// caller's own permissions.
type ProfileReader func(id Identity, path string) ([]byte, error)

// Authorize decides whether the caller may run args under the host's policy,
// and returns the profile to run with every override applied. avail are the
// host's GPU indices (for bounding --gpus all). Each refusal is one line
// naming the flag or profile and what would be allowed.
func Authorize(h *configs.Host, id Identity, args *RunArgs, avail []int, read ProfileReader) (*Decision, error) {
	deny := func(format string, a ...any) error {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, a...), ErrDenied)
	}
	adminOnly := func(what string) error {
		return deny("%s: only root and members of the admin groups (daemon.admin_groups) may use it", what)
	}
	if len(args.Command) == 0 {
		return nil, errors.New("no command: use securetrain run [flags] -- COMMAND [ARGS...]")
	}
	if !id.Admin {
		switch {
		case args.User != "":
			return nil, adminOnly("--user " + args.User)
		case args.Learn:
			return nil, adminOnly("--learn")
		case args.Rootfs != "":
			return nil, adminOnly("--rootfs " + args.Rootfs)
		case args.Unrestricted:
			return nil, adminOnly("--unrestricted")
		}
	}

	// The profile: a name, or a file.
	name := args.Profile
	if name == "" {
		name = "default"
	}
	var prof *configs.Profile
	var err error
	if configs.IsProfilePath(name) {
		p := name
		if !filepath.IsAbs(p) {
			p = filepath.Join(args.Dir, p)
		}
		p = filepath.Clean(p)
		base := strings.TrimSuffix(filepath.Base(p), ".yaml")
		inAdminDir := filepath.Dir(p) == filepath.Clean(h.ProfileDir) && strings.HasSuffix(p, ".yaml")
		switch {
		case inAdminDir:
			name = base // loaded by name from the admin directory, below
		case !id.Admin:
			return nil, deny("profile file %s is outside the admin's profile directory %s: use a profile name (securetrain profiles lists them), or ask an admin to install it", args.Profile, h.ProfileDir)
		default:
			data, rerr := read(id, p)
			if rerr != nil {
				return nil, rerr
			}
			if prof, err = configs.ParseProfile(p, data); err != nil {
				return nil, err
			}
		}
	}
	if prof == nil {
		if prof, err = configs.LoadProfile(name, h.ProfileDir); err != nil {
			return nil, err
		}
	}

	dec := &Decision{Rule: -1}
	var rule *configs.PolicyRule
	if !id.Admin {
		r, i, named := h.Policy.Match(id.Name, id.GroupNames, name)
		if r == nil {
			if !named {
				return nil, deny("user %s may not run jobs through the daemon: no rule under policy.rules in %s names the user or their groups", id.Name, h.Source)
			}
			return nil, deny("profile %q is not allowed for user %s (allowed: %s)", name, id.Name, strings.Join(h.Policy.ProfilesFor(id.Name, id.GroupNames), ", "))
		}
		rule, dec.Rule = r, i
		if prof.Network.Unrestricted {
			return nil, adminOnly(fmt.Sprintf("profile %q is unrestricted (no egress allowlist)", name))
		}
		if err := bound(h, rule, i, id, args, prof, avail); err != nil {
			return nil, err
		}
	}

	q, err := launcher.ApplyOverrides(prof, launcher.Overrides{
		CPUs: args.CPUs, Memory: args.Memory, Pids: args.Pids, WallTime: args.WallTime,
		GPUs: args.GPUs, Network: args.Network, Rootfs: args.Rootfs, Unrestricted: args.Unrestricted,
	})
	if err != nil {
		return nil, err
	}
	// --allow and --peers go to the launcher with the request (bounded
	// above for users who are not admins).
	dec.Profile = q
	return dec, nil
}

// bound checks each flag override against the deciding rule's bounds.
func bound(h *configs.Host, r *configs.PolicyRule, i int, id Identity, args *RunArgs, prof *configs.Profile, avail []int) error {
	field := func(f string) string { return fmt.Sprintf("policy.rules[%d].%s", i, f) }
	over := func(flag, val, bnd, f string) error {
		return fmt.Errorf("%s %s: above the bound %s the host policy sets for user %s (%s): %w", flag, val, bnd, id.Name, field(f), ErrDenied)
	}
	unset := func(flag, f string) error {
		return fmt.Errorf("%s: not allowed for user %s: the host policy sets no %s: %w", flag, id.Name, field(f), ErrDenied)
	}
	if args.CPUs != 0 {
		switch {
		case r.MaxCPUs == 0:
			return unset("--cpus", "max_cpus")
		case args.CPUs > r.MaxCPUs:
			return over("--cpus", fmt.Sprint(args.CPUs), fmt.Sprint(r.MaxCPUs), "max_cpus")
		}
	}
	if args.Memory != "" {
		m, err := configs.ParseByteSize(args.Memory)
		if err != nil {
			return fmt.Errorf("--memory: %w", err)
		}
		switch {
		case r.MaxMemory == 0:
			return unset("--memory", "max_memory")
		case m > r.MaxMemory:
			return over("--memory", args.Memory, r.MaxMemory.String(), "max_memory")
		}
	}
	if args.WallTime != 0 {
		switch {
		case r.MaxWallTime == 0:
			return unset("--wall-time", "max_wall_time")
		case args.WallTime > r.MaxWallTime.D():
			return over("--wall-time", args.WallTime.String(), r.MaxWallTime.D().String(), "max_wall_time")
		}
	}
	if args.GPUs != "" {
		g, err := configs.ParseGPUSet(args.GPUs)
		if err != nil {
			return fmt.Errorf("--gpus: %w", err)
		}
		n := g.Count + len(g.Indices)
		if g.All {
			n = len(avail)
		}
		switch {
		case g.None():
		case r.MaxGPUs == 0:
			return unset("--gpus", "max_gpus")
		case n > r.MaxGPUs:
			return over("--gpus", args.GPUs, fmt.Sprint(r.MaxGPUs), "max_gpus")
		}
	}
	if args.Pids != 0 && args.Pids > prof.Limits.Pids {
		return fmt.Errorf("--pids %d: above the profile's limits.pids %d; only root and admin groups may raise it: %w", args.Pids, prof.Limits.Pids, ErrDenied)
	}
	// --peers open egress to addresses too: bounded by the same entries.
	for _, flag := range []struct {
		name    string
		entries []string
	}{{"--allow", args.Allow}, {"--peers", args.Peers}} {
		for _, a := range flag.entries {
			if !r.AllowsEntry(a) && !configs.MatchAllow(h.Network.AllowMax, a) {
				allowed := strings.Join(append(slices.Clone(r.Allow), h.Network.AllowMax...), ", ")
				if allowed == "" {
					allowed = "none"
				}
				return fmt.Errorf("%s %s: not permitted for user %s by the host policy (%s: %s): %w", flag.name, a, id.Name, field("allow"), allowed, ErrDenied)
			}
		}
	}
	return nil
}
