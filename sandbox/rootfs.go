package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// HostSystemDirs are the host directories a "host" root shows read-only.
// Nothing else of the host is visible: no /home, /root, /var, /run, /srv.
var HostSystemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt"}

// HostEtc lists the entries of the host's /etc a job may need (loader cache,
// CA certificates, time zone, Python and font configuration). passwd, group,
// hosts, hostname and resolv.conf are generated per job instead; shadow,
// sudoers, ssh, securetrain's own configuration and the rest never appear.
var HostEtc = []string{
	"alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d",
	"ssl", "ca-certificates", "ca-certificates.conf", "pki",
	"localtime", "timezone", "nsswitch.conf", "host.conf", "gai.conf",
	"protocols", "services", "mime.types", "os-release", "debian_version", "lsb-release",
	"python3", "python3.*", "fonts", "matplotlibrc", "terminfo", "inputrc",
	"OpenCL", "vulkan", "magic", "mailcap",
}

// Link is a symbolic link in the root skeleton (usr-merged /bin -> usr/bin).
type Link struct{ Name, Target string }

// HostRoot returns the read-only mounts and symlinks that make a
// host-minimal root: system directories bound read-only, or linked when the
// host links them, as usr-merged systems do. Its /etc is made per job
// (EtcDir) from the allowlisted entries (HostEtcEntries).
func HostRoot(hostRoot string) ([]Mount, []Link, error) {
	var mounts []Mount
	var links []Link
	for _, d := range HostSystemDirs {
		hp := filepath.Join(hostRoot, d)
		fi, err := os.Lstat(hp)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, nil, fmt.Errorf("host root: %w", err)
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			t, err := os.Readlink(hp)
			if err != nil {
				return nil, nil, fmt.Errorf("host root: %w", err)
			}
			links = append(links, Link{Name: d, Target: t})
			continue
		}
		if fi.IsDir() {
			mounts = append(mounts, Mount{Kind: Bind, Source: hp, Target: d, ReadOnly: true})
		}
	}
	return mounts, links, nil
}

// HostEtcEntries are the host's /etc entries HostEtc allows that exist, as
// host paths.
func HostEtcEntries(hostRoot string) []string {
	var out []string
	for _, pat := range HostEtc {
		matches, _ := filepath.Glob(filepath.Join(hostRoot, "etc", pat))
		out = append(out, matches...)
	}
	return out
}

// PrepareRoot creates the root skeleton directory at dir: the symlinks and
// an empty directory (or file) for every top-level mount point, so runsc need
// not create anything in a root it does not own. The skeleton is root-owned
// and not writable by the job; the job's writes go to runsc's in-memory
// overlay (limits.scratch).
func PrepareRoot(dir string, links []Link, mounts []Mount) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, l := range links {
		p := filepath.Join(dir, l.Name)
		if err := os.Symlink(l.Target, p); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("root skeleton: %w", err)
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "etc", "run", "home", "var", "var/tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777|fs.ModeSticky); err != nil {
		return err
	}
	return mountPoints(dir, links, mounts)
}

// mountPoints creates under dir an empty directory (or file) for each
// mount's target, skipping those under one of links.
func mountPoints(dir string, links []Link, mounts []Mount) error {
	for _, m := range mounts {
		if linked(links, m.Target) || shownBy(mounts, m.Target) {
			continue
		}
		p := filepath.Join(dir, m.Target)
		isFile := false
		if m.Kind == Bind {
			if fi, err := os.Stat(m.Source); err == nil && !fi.IsDir() {
				isFile = true
			}
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("root skeleton: %w", err)
		}
		if isFile {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return fmt.Errorf("root skeleton: %w", err)
			}
			f.Close()
			continue
		}
		if err := os.MkdirAll(p, 0o755); err != nil {
			return fmt.Errorf("root skeleton: %w", err)
		}
	}
	return nil
}

// shownBy reports whether target lies under a bind mount whose source
// already has it (the job's /etc files in the shared /etc view): its mount
// point in the skeleton would be hidden under that mount.
func shownBy(mounts []Mount, target string) bool {
	for _, b := range mounts {
		rel, ok := strings.CutPrefix(target, strings.TrimSuffix(b.Target, "/")+"/")
		if b.Kind != Bind || !ok || rel == "" {
			continue
		}
		if _, err := os.Lstat(filepath.Join(b.Source, rel)); err == nil {
			return true
		}
	}
	return false
}

// linked reports whether target lies under one of the skeleton's symlinks
// (a mount point there would be created through the link, on the host).
func linked(links []Link, target string) bool {
	for _, l := range links {
		if target == l.Name || strings.HasPrefix(target, l.Name+"/") {
			return true
		}
	}
	return false
}

// User is the job's identity inside the sandbox.
type User struct {
	Name     string
	UID, GID uint32
	Groups   []uint32
	Home     string
}

// EtcFileNames are the /etc files EtcFiles makes for each job.
var EtcFileNames = []string{"group", "hostname", "hosts", "passwd", "resolv.conf"}

// EtcFiles writes the per-job /etc files (passwd, group, hosts, hostname,
// resolv.conf) into dir and returns the read-only mounts that show them.
// resolv and hosts may be nil: no network means no resolver.
func EtcFiles(dir string, u User, hostname string, resolv, hosts []byte) ([]Mount, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	name := u.Name
	if name == "" || name == "root" {
		name = fmt.Sprintf("user%d", u.UID)
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n%s:x:%d:%d:%s:%s:/bin/sh\n",
		name, u.UID, u.GID, name, u.Home)
	if u.UID == 65534 {
		passwd = fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:%s:/bin/sh\n", u.Home)
	}
	groups := []string{"root:x:0:", "nogroup:x:65534:"}
	gids := append([]uint32{u.GID}, u.Groups...)
	seen := map[uint32]bool{0: true, 65534: true}
	for i, g := range gids {
		if seen[g] {
			continue
		}
		seen[g] = true
		gname := fmt.Sprintf("group%d", g)
		if i == 0 {
			gname = name
		}
		groups = append(groups, fmt.Sprintf("%s:x:%d:%s", gname, g, name))
	}
	if hosts == nil {
		hosts = []byte(fmt.Sprintf("127.0.0.1\tlocalhost %s\n::1\tlocalhost ip6-localhost ip6-loopback\n", hostname))
	}
	files := map[string][]byte{
		"passwd":      []byte(passwd),
		"group":       []byte(strings.Join(groups, "\n") + "\n"),
		"hosts":       hosts,
		"hostname":    []byte(hostname + "\n"),
		"resolv.conf": resolv,
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	var mounts []Mount
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return nil, err
		}
		mounts = append(mounts, Mount{Kind: Bind, Source: p, Target: path.Join("/etc", n), ReadOnly: true})
	}
	return mounts, nil
}
