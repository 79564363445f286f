package configs

import (
	"fmt"
	"strings"
)

// HostPolicy says which users and groups may run which profiles through the
// daemon, and how far their command-line overrides may go. Root and members
// of daemon.admin_groups are not bound by it. Without rules, no other user
// may run a job through the daemon (it fails closed).
type HostPolicy struct {
	Rules []PolicyRule `yaml:"rules"`
}

// PolicyRule grants its users and groups the listed profiles with bounds on
// the flag overrides. The first rule that names the caller (by user name, or
// by a group the caller is in) and the profile decides.
type PolicyRule struct {
	Users    []string `yaml:"users"`    // user names, or "*" for every user
	Groups   []string `yaml:"groups"`   // group names (looked up through NSS)
	Profiles []string `yaml:"profiles"` // profile names in the admin directory or shipped, or "*"
	// Bounds for --cpus, --memory, --gpus and --wall-time. An unset bound
	// means the flag may not be used at all by these users.
	MaxCPUs     float64  `yaml:"max_cpus"`
	MaxMemory   ByteSize `yaml:"max_memory"`
	MaxGPUs     int      `yaml:"max_gpus"`
	MaxWallTime Duration `yaml:"max_wall_time"`
	// Allow lists the --allow entries these users may add ("*.example.com"
	// matches any name ending in .example.com).
	Allow []string `yaml:"allow"`
}

func (p HostPolicy) validate(file string) []error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{File: file, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	for i, r := range p.Rules {
		f := fmt.Sprintf("policy.rules[%d]", i)
		if len(r.Users) == 0 && len(r.Groups) == 0 {
			add(f, "names no users and no groups; give users: [NAME] (or \"*\") or groups: [NAME]")
		}
		for j, u := range r.Users {
			if u != "*" && !validPrincipal(u) {
				add(fmt.Sprintf("%s.users[%d]", f, j), "must be a user name or \"*\", got %q", u)
			}
		}
		for j, g := range r.Groups {
			if !validPrincipal(g) {
				add(fmt.Sprintf("%s.groups[%d]", f, j), "must be a group name, got %q", g)
			}
		}
		if len(r.Profiles) == 0 {
			add(f+".profiles", "lists no profiles; give profile names or \"*\"")
		}
		for j, pr := range r.Profiles {
			if pr != "*" && !validName(pr) {
				add(fmt.Sprintf("%s.profiles[%d]", f, j), "must be a profile name (letters, digits, '-', '_', '.') or \"*\", got %q", pr)
			}
		}
		if r.MaxCPUs < 0 {
			add(f+".max_cpus", "must not be negative, got %g", r.MaxCPUs)
		}
		if r.MaxGPUs < 0 {
			add(f+".max_gpus", "must not be negative, got %d", r.MaxGPUs)
		}
		if r.MaxWallTime < 0 {
			add(f+".max_wall_time", "must not be negative")
		}
		for j, a := range r.Allow {
			if strings.TrimSpace(a) == "" || strings.ContainsAny(a, " \t\n") {
				add(fmt.Sprintf("%s.allow[%d]", f, j), "must be a host, host:port or address range without spaces, got %q", a)
			}
		}
	}
	return errs
}

func validPrincipal(s string) bool {
	if s == "" || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c == ':' || c == '/' || c == ',' || c == 0x7f {
			return false
		}
	}
	return true
}

// Match returns the first rule naming the user (or one of groups) and the
// profile. names reports whether any rule names the user at all, so that a
// refusal can say which of the two is missing.
func (p HostPolicy) Match(user string, groups []string, profile string) (rule *PolicyRule, index int, names bool) {
	for i := range p.Rules {
		r := &p.Rules[i]
		if !r.names(user, groups) {
			continue
		}
		names = true
		for _, pr := range r.Profiles {
			if pr == "*" || pr == profile {
				return r, i, true
			}
		}
	}
	return nil, -1, names
}

// ProfilesFor lists the profile names the rules naming the user grant.
func (p HostPolicy) ProfilesFor(user string, groups []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range p.Rules {
		if !r.names(user, groups) {
			continue
		}
		for _, pr := range r.Profiles {
			if !seen[pr] {
				seen[pr] = true
				out = append(out, pr)
			}
		}
	}
	return out
}

func (r *PolicyRule) names(user string, groups []string) bool {
	for _, u := range r.Users {
		if u == "*" || u == user {
			return true
		}
	}
	for _, g := range r.Groups {
		for _, have := range groups {
			if g == have {
				return true
			}
		}
	}
	return false
}

// AllowsEntry reports whether the rule lets a user add --allow entry a: an
// exact entry, or a "*.domain" entry and a name below that domain.
func (r *PolicyRule) AllowsEntry(a string) bool {
	return MatchAllow(r.Allow, a)
}

// MatchAllow reports whether entry a is covered by one of the patterns.
func MatchAllow(patterns []string, a string) bool {
	for _, p := range patterns {
		if p == a {
			return true
		}
		if suffix, ok := strings.CutPrefix(p, "*."); ok {
			host := a
			if h, _, found := strings.Cut(a, ":"); found && !strings.Contains(a, "]") {
				host = h
			}
			if strings.HasSuffix(host, "."+suffix) && !strings.HasPrefix(host, "*") {
				return true
			}
		}
	}
	return false
}
