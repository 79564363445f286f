package sandbox

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func mkfile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// fakeHost builds a usr-merged host root: /bin, /lib, /lib64 and /sbin link
// into /usr, /opt is a real directory, /etc holds allowlisted entries next to
// secrets, and /home, /root, /var, /run hold things a job must never see.
func fakeHost(t *testing.T) string {
	t.Helper()
	r := t.TempDir()
	mkdir(t, filepath.Join(r, "usr/bin"))
	mkdir(t, filepath.Join(r, "usr/lib/x86_64-linux-gnu"))
	mkdir(t, filepath.Join(r, "usr/sbin"))
	symlink(t, "usr/bin", filepath.Join(r, "bin"))
	symlink(t, "usr/lib", filepath.Join(r, "lib"))
	symlink(t, "usr/lib64", filepath.Join(r, "lib64"))
	symlink(t, "usr/sbin", filepath.Join(r, "sbin"))
	mkdir(t, filepath.Join(r, "opt/conda"))
	for _, f := range []string{"ld.so.cache", "nsswitch.conf", "os-release", "mime.types"} {
		mkfile(t, filepath.Join(r, "etc", f), "x\n")
	}
	mkdir(t, filepath.Join(r, "etc/ssl/certs"))
	mkdir(t, filepath.Join(r, "etc/ld.so.conf.d"))
	mkdir(t, filepath.Join(r, "etc/python3.11"))
	symlink(t, "/usr/share/zoneinfo/Etc/UTC", filepath.Join(r, "etc/localtime"))
	// Never visible.
	for _, f := range []string{"shadow", "gshadow", "sudoers", "passwd", "group", "hosts", "resolv.conf", "machine-id", "securetrain/host.yaml", "sudoers.d/admins", "ssh/ssh_host_ed25519_key", "ssh/sshd_config", "vault.d/agent.hcl", "krb5.keytab"} {
		mkfile(t, filepath.Join(r, "etc", f), "secret\n")
	}
	mkfile(t, filepath.Join(r, "root/.ssh/id_ed25519"), "key\n")
	mkfile(t, filepath.Join(r, "home/alice/.aws/credentials"), "key\n")
	mkfile(t, filepath.Join(r, "var/run/docker.sock"), "")
	mkfile(t, filepath.Join(r, "run/containerd/containerd.sock"), "")
	return r
}

func TestHostRoot(t *testing.T) {
	r := fakeHost(t)
	mounts, links, err := HostRoot(r)
	if err != nil {
		t.Fatal(err)
	}
	wantLinks := []Link{{"/bin", "usr/bin"}, {"/sbin", "usr/sbin"}, {"/lib", "usr/lib"}, {"/lib64", "usr/lib64"}}
	if !slices.Equal(links, wantLinks) {
		t.Errorf("links %v, want %v", links, wantLinks)
	}
	got := map[string]Mount{}
	for _, m := range mounts {
		if _, dup := got[m.Target]; dup {
			t.Errorf("%s mounted twice", m.Target)
		}
		got[m.Target] = m
		if m.Kind != Bind || !m.ReadOnly {
			t.Errorf("%s: %+v, want a read-only bind", m.Target, m)
		}
		if want := filepath.Join(r, m.Target); m.Source != want {
			t.Errorf("%s: source %s, want %s", m.Target, m.Source, want)
		}
	}
	var targets []string
	for t := range got {
		targets = append(targets, t)
	}
	for _, e := range HostEtcEntries(r) {
		if filepath.Dir(e) != filepath.Join(r, "etc") {
			t.Errorf("etc entry %s is not in the host's /etc", e)
		}
		targets = append(targets, "/etc/"+filepath.Base(e))
		mounts = append(mounts, Mount{Target: "/etc/" + filepath.Base(e)})
	}
	slices.Sort(targets)
	want := []string{"/etc/ld.so.cache", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/mime.types",
		"/etc/nsswitch.conf", "/etc/os-release", "/etc/python3.11", "/etc/ssl", "/opt", "/usr"}
	if !slices.Equal(targets, want) {
		t.Errorf("mounts\n got %v\nwant %v", targets, want)
	}
	for _, m := range mounts {
		for _, bad := range []string{"shadow", "sudoers", "ssh", "securetrain", "passwd", "group", "vault", "krb5", "machine-id", "/home", "/root", "/var", "/run"} {
			if strings.Contains(m.Target, bad) {
				t.Errorf("host root shows %s", m.Target)
			}
		}
	}
}

func TestHostRootAllowlistOnlyNamesEtcEntries(t *testing.T) {
	for _, e := range HostEtc {
		for _, bad := range []string{"shadow", "gshadow", "sudoers", "ssh", "passwd", "group", "securetrain", "*"} {
			if e == bad || (bad != "*" && strings.Contains(e, bad)) || e == "*" {
				t.Errorf("HostEtc allows %q", e)
			}
		}
	}
	for _, d := range HostSystemDirs {
		for _, bad := range []string{"/home", "/root", "/var", "/run", "/etc", "/srv", "/tmp", "/mnt", "/media"} {
			if d == bad {
				t.Errorf("HostSystemDirs shows %s", d)
			}
		}
	}
}

func TestPrepareRoot(t *testing.T) {
	host := t.TempDir()
	outside := filepath.Join(host, "outside") // what an absolute link points at on the host
	mkdir(t, outside)
	srcFile := filepath.Join(host, "passwd")
	mkfile(t, srcFile, "x\n")
	srcDir := filepath.Join(host, "code")
	mkdir(t, srcDir)

	dir := filepath.Join(t.TempDir(), "rootfs")
	links := []Link{{"/bin", "usr/bin"}, {"/lib64", outside}}
	mounts := []Mount{
		{Kind: Bind, Source: filepath.Join(host, "usr-does-not-exist"), Target: "/usr", ReadOnly: true},
		{Kind: Bind, Source: srcFile, Target: "/etc/passwd", ReadOnly: true},
		{Kind: Bind, Source: srcDir, Target: "/home/alice/proj", ReadOnly: true},
		{Kind: Tmpfs, Target: "/home/alice/proj/.ssh"},
		{Kind: Bind, Source: srcFile, Target: "/home/alice/proj/.netrc"},
		{Kind: Bind, Source: srcDir, Target: "/lib64/firmware"}, // under a link: never created through it
		{Kind: Bind, Source: srcDir, Target: "/bin"},            // the link itself
	}
	if err := PrepareRoot(dir, links, mounts); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path string
		mode fs.FileMode // type bits
	}{
		{"usr", fs.ModeDir}, {"etc/passwd", 0}, {"home/alice/proj", fs.ModeDir},
		{"home/alice/proj/.ssh", fs.ModeDir}, {"home/alice/proj/.netrc", 0},
		{"bin", fs.ModeSymlink}, {"lib64", fs.ModeSymlink},
		{"proc", fs.ModeDir}, {"sys", fs.ModeDir}, {"dev", fs.ModeDir}, {"tmp", fs.ModeDir},
		{"etc", fs.ModeDir}, {"var/tmp", fs.ModeDir},
	} {
		fi, err := os.Lstat(filepath.Join(dir, tc.path))
		if err != nil {
			t.Errorf("%s: %v", tc.path, err)
			continue
		}
		if fi.Mode().Type() != tc.mode {
			t.Errorf("%s: type %v, want %v", tc.path, fi.Mode().Type(), tc.mode)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "etc/passwd")); err == nil && fi.Size() != 0 {
		t.Errorf("mount point etc/passwd has content")
	}
	if fi, err := os.Stat(filepath.Join(dir, "tmp")); err != nil || fi.Mode()&fs.ModeSticky == 0 || fi.Mode().Perm() != 0o777 {
		t.Errorf("tmp mode %v, want sticky 0777 (%v)", fi.Mode(), err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("PrepareRoot created %v on the host through the /lib64 link", ents)
	}
	if tgt, _ := os.Readlink(filepath.Join(dir, "bin")); tgt != "usr/bin" {
		t.Errorf("bin -> %q, want usr/bin", tgt)
	}
	// A second run over the same skeleton is harmless.
	if err := PrepareRoot(dir, links, mounts); err != nil {
		t.Errorf("second PrepareRoot: %v", err)
	}
}

func TestEtcFiles(t *testing.T) {
	for _, tc := range []struct {
		name       string
		u          User
		passwdLine string // the job user's line
		groupLines []string
	}{
		{"alice", User{Name: "alice", UID: 1000, GID: 1000, Groups: []uint32{27, 44, 1000}, Home: "/home/alice"},
			"alice:x:1000:1000:alice:/home/alice:/bin/sh",
			[]string{"alice:x:1000:alice", "group27:x:27:alice", "group44:x:44:alice"}},
		{"no name", User{UID: 4242, GID: 4242, Home: "/var/tmp/home"},
			"user4242:x:4242:4242:user4242:/var/tmp/home:/bin/sh",
			[]string{"user4242:x:4242:user4242"}},
		{"named root", User{Name: "root", UID: 1001, GID: 1001, Home: "/home/x"},
			"user1001:x:1001:1001:user1001:/home/x:/bin/sh",
			[]string{"user1001:x:1001:user1001"}},
		{"nobody", User{Name: "nobody", UID: 65534, GID: 65534, Home: "/var/tmp/home"},
			"nobody:x:65534:65534:nobody:/var/tmp/home:/bin/sh",
			nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			mounts, err := EtcFiles(dir, tc.u, "st-abc", nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			var targets []string
			for _, m := range mounts {
				targets = append(targets, m.Target)
				if !m.ReadOnly || m.Kind != Bind || filepath.Dir(m.Source) != dir {
					t.Errorf("%s: %+v, want a read-only bind from %s", m.Target, m, dir)
				}
			}
			if want := []string{"/etc/group", "/etc/hostname", "/etc/hosts", "/etc/passwd", "/etc/resolv.conf"}; !slices.Equal(targets, want) {
				t.Errorf("targets %v, want %v", targets, want)
			}
			read := func(n string) []string {
				b, err := os.ReadFile(filepath.Join(dir, n))
				if err != nil {
					t.Fatal(err)
				}
				return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			}
			passwd := read("passwd")
			if !slices.Contains(passwd, tc.passwdLine) {
				t.Errorf("passwd %q lacks %q", passwd, tc.passwdLine)
			}
			for _, l := range passwd {
				f := strings.Split(l, ":")
				if len(f) != 7 {
					t.Errorf("passwd line %q: %d fields", l, len(f))
					continue
				}
				if f[2] == "0" && f[6] != "/usr/sbin/nologin" {
					t.Errorf("root has a login shell: %q", l)
				}
				if f[0] == "root" && f[2] != "0" {
					t.Errorf("job user named root: %q", l)
				}
			}
			group := read("group")
			for _, g := range tc.groupLines {
				if !slices.Contains(group, g) {
					t.Errorf("group %q lacks %q", group, g)
				}
			}
			if !slices.Contains(group, "root:x:0:") {
				t.Errorf("group %q: root group must have no members", group)
			}
			if h := read("hostname"); !slices.Equal(h, []string{"st-abc"}) {
				t.Errorf("hostname %q", h)
			}
			if h := read("hosts"); !strings.Contains(h[0], "localhost st-abc") {
				t.Errorf("hosts %q", h)
			}
			if b, _ := os.ReadFile(filepath.Join(dir, "resolv.conf")); len(b) != 0 {
				t.Errorf("no network, but resolv.conf is %q", b)
			}
		})
	}
}

func TestEtcFilesResolverAndHosts(t *testing.T) {
	dir := t.TempDir()
	if _, err := EtcFiles(dir, User{Name: "a", UID: 1000, GID: 1000, Home: "/h"}, "h", []byte("nameserver 10.213.0.1\n"), []byte("10.213.0.2 peer\n")); err != nil {
		t.Fatal(err)
	}
	for f, want := range map[string]string{"resolv.conf": "nameserver 10.213.0.1\n", "hosts": "10.213.0.2 peer\n"} {
		if b, _ := os.ReadFile(filepath.Join(dir, f)); string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}
}

// TestHostEtcView: a host-minimal root's /etc is a copy that holds the
// allowlisted entries as bind mounts showed them (a top-level link
// followed, links inside kept) with mount points for the job's own files,
// and nothing the job could not read on the host; it is made once for a
// content and made again when the host's entries change.
func TestHostEtcView(t *testing.T) {
	r := fakeHost(t)
	mkfile(t, filepath.Join(r, "etc/ssl/certs/ca.pem"), "CERT\n")
	symlink(t, "ca.pem", filepath.Join(r, "etc/ssl/certs/abcd.0"))
	mkfile(t, filepath.Join(r, "etc/ssl/private/host.key"), "KEY\n")
	os.Chmod(filepath.Join(r, "etc/ssl/private"), 0o700)
	mkfile(t, filepath.Join(r, "etc/ssl/openssl.cnf"), "conf\n")
	mkfile(t, filepath.Join(r, "etc/timezone.real"), "Etc/UTC\n")
	symlink(t, filepath.Join(r, "etc/timezone.real"), filepath.Join(r, "etc/timezone"))
	mkfile(t, filepath.Join(r, "etc/gai.conf"), "root only\n")
	os.Chmod(filepath.Join(r, "etc/gai.conf"), 0o600)

	cache := t.TempDir()
	old := syscall.Umask(0o077) // a hardened root shell: the job must still read its /etc
	dir, err := HostEtcView(cache, HostEtcEntries(r))
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]fs.FileMode{"ssl": 0o755, "ssl/certs": 0o755, "ssl/certs/ca.pem": 0o644, "passwd": 0o644} {
		if fi, err := os.Stat(filepath.Join(dir, rel)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %o whatever the umask", rel, fi, err, want)
		}
	}
	read := func(rel string) string {
		b, _ := os.ReadFile(filepath.Join(dir, rel))
		return string(b)
	}
	for rel, want := range map[string]string{"ssl/certs/ca.pem": "CERT\n", "ssl/openssl.cnf": "conf\n", "timezone": "Etc/UTC\n", "nsswitch.conf": "x\n"} {
		if got := read(rel); got != want {
			t.Errorf("%s = %q, want %q", rel, got, want)
		}
	}
	if l, err := os.Readlink(filepath.Join(dir, "ssl/certs/abcd.0")); err != nil || l != "ca.pem" {
		t.Errorf("a link inside a directory must stay a link: %q %v", l, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, "timezone")); err != nil || !fi.Mode().IsRegular() {
		t.Errorf("a top-level link must be followed, as a bind mount did: %v %v", fi, err)
	}
	for _, never := range []string{"ssl/private", "gai.conf", "shadow", "sudoers", "ssh", "securetrain", "krb5.keytab", "machine-id", "timezone.real"} {
		if _, err := os.Lstat(filepath.Join(dir, never)); err == nil {
			t.Errorf("%s was copied", never)
		}
	}
	for _, n := range EtcFileNames {
		if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.Size() != 0 {
			t.Errorf("mount point %s: %v %v", n, fi, err)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("the view must be root's and readable by all: %v %v", fi, err)
	}

	again, err := HostEtcView(cache, HostEtcEntries(r))
	if err != nil || again != dir {
		t.Fatalf("the same content must give the same view: %s %v", again, err)
	}
	mkfile(t, filepath.Join(r, "etc/ssl/certs/new.pem"), "NEW\n")
	changed, err := HostEtcView(cache, HostEtcEntries(r))
	if err != nil || changed == dir {
		t.Fatalf("a changed /etc must give a new view: %s %v", changed, err)
	}
	if b, _ := os.ReadFile(filepath.Join(changed, "ssl/certs/new.pem")); string(b) != "NEW\n" {
		t.Errorf("the new view lacks the new file")
	}
	if err := RemoveStaleEtcViews(cache, HostEtcEntries(r)); err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir(cache); len(des) != 1 || filepath.Join(cache, des[0].Name()) != changed {
		t.Errorf("after removing stale views: %v, want only %s", des, changed)
	}
}

// TestEtcFileNames: the mount points a view holds are the files EtcFiles
// makes.
func TestEtcFileNames(t *testing.T) {
	ms, err := EtcFiles(t.TempDir(), User{Name: "a", UID: 1000, GID: 1000}, "h", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, filepath.Base(m.Target))
	}
	if !slices.Equal(got, EtcFileNames) {
		t.Errorf("EtcFiles makes %v, EtcFileNames says %v", got, EtcFileNames)
	}
}
