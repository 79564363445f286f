package configs

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed profiles/*.yaml
var shipped embed.FS

// DefaultProfileDir is where an admin installs profiles; a name found there
// wins over a shipped profile of the same name.
const DefaultProfileDir = "/etc/securetrain/profiles"

// ErrNoProfile is returned when a profile name is found nowhere.
var ErrNoProfile = errors.New("no such profile")

// ProfileRef says where a named profile lives.
type ProfileRef struct {
	Name        string
	Source      string // file path, or builtin:NAME
	Description string
	Admin       bool // found in the admin's profile directory
}

// IsProfilePath reports whether arg names a file rather than a profile name.
func IsProfilePath(arg string) bool {
	return strings.ContainsRune(arg, '/') || strings.HasSuffix(arg, ".yaml") || strings.HasSuffix(arg, ".yml")
}

// LoadProfile loads a profile by NAME (admin directory, then shipped) or by
// FILE path, strictly, with defaults and validation.
func LoadProfile(arg, adminDir string) (*Profile, error) {
	if arg == "" {
		arg = "default"
	}
	if IsProfilePath(arg) {
		data, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("profile %s: %w", arg, unwrapPathErr(err))
		}
		return ParseProfile(arg, data)
	}
	if !validName(arg) {
		return nil, fmt.Errorf("profile %q: a name may hold letters, digits, '-', '_' and '.' only (or give a file path)", arg)
	}
	if adminDir != "" {
		p := filepath.Join(adminDir, arg+".yaml")
		if data, err := os.ReadFile(p); err == nil {
			return ParseProfile(p, data)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("profile %s: %w", p, unwrapPathErr(err))
		}
	}
	data, err := shipped.ReadFile("profiles/" + arg + ".yaml")
	if err != nil {
		names, _ := ListProfiles(adminDir)
		var have []string
		for _, r := range names {
			have = append(have, r.Name)
		}
		return nil, fmt.Errorf("profile %q: %w; available: %s (or give a file path)", arg, ErrNoProfile, strings.Join(have, ", "))
	}
	return ParseProfile("builtin:"+arg, data)
}

// ListProfiles lists the shipped profiles and those in adminDir.
func ListProfiles(adminDir string) ([]ProfileRef, error) {
	byName := map[string]ProfileRef{}
	ents, _ := fs.ReadDir(shipped, "profiles")
	for _, e := range ents {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		data, _ := shipped.ReadFile("profiles/" + e.Name())
		r := ProfileRef{Name: name, Source: "builtin:" + name}
		if p, err := ParseProfile(r.Source, data); err == nil {
			r.Description = p.Description
		}
		byName[name] = r
	}
	var errs []error
	if adminDir != "" {
		// os.ReadDir, not filepath.Glob: a directory name holding * or [
		// must not match other directories, and an unreadable directory is
		// an error rather than an empty list.
		ents, err := os.ReadDir(adminDir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("profile directory %s: %w", adminDir, unwrapPathErr(err)))
		}
		for _, e := range ents {
			name, ok := strings.CutSuffix(e.Name(), ".yaml")
			if !ok || e.IsDir() || !validName(name) {
				continue
			}
			f := filepath.Join(adminDir, e.Name())
			r := ProfileRef{Name: name, Source: f, Admin: true}
			data, err := os.ReadFile(f)
			if err == nil {
				var p *Profile
				if p, err = ParseProfile(f, data); err == nil {
					r.Description = p.Description
				}
			}
			if err != nil {
				r.Description = "INVALID: " + err.Error()
				errs = append(errs, err)
			}
			byName[name] = r
		}
	}
	out := make([]ProfileRef, 0, len(byName))
	for _, r := range byName {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errors.Join(errs...)
}

func validName(s string) bool {
	if s == "" || s[0] == '.' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
