package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
)

func TestListen(t *testing.T) {
	testenv.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "securetrain.sock")
	ln, err := listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, _ := os.Stat(sock)
	if fi.Mode().Perm() != 0o666 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("socket mode %v, want a socket 0666 (callers are told apart by their peer credentials)", fi.Mode())
	}
	di, _ := os.Stat(dir)
	if di.Mode().Perm() != 0o711 {
		t.Errorf("socket directory mode %o, want 0711 (searchable, not listable)", di.Mode().Perm())
	}
	// A second daemon on the same socket is refused; the first keeps it.
	if _, err := listen(sock); err == nil || !strings.Contains(err.Error(), "another daemon is listening") {
		t.Errorf("second listen: %v", err)
	}
	c, err := net.Dial("unixpacket", sock)
	if err != nil {
		t.Fatalf("the first daemon lost its socket: %v", err)
	}
	c.Close()
	// Something that is not a socket is never removed.
	other := filepath.Join(dir, "file")
	os.WriteFile(other, nil, 0o600)
	if _, err := listen(other); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("listen over a file: %v", err)
	}
	// A directory others may write is not fixed up.
	bad := filepath.Join(t.TempDir(), "bad")
	os.Mkdir(bad, 0o720)
	os.Chmod(bad, 0o720)
	if _, err := listen(filepath.Join(bad, "s.sock")); err == nil || !strings.Contains(err.Error(), "must be searchable by every user") {
		t.Errorf("listen in a group-writable 0720 directory: %v", err)
	}
}

func TestIdentifyRoot(t *testing.T) {
	testenv.RequireRoot(t)
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := net.Dial("unixpacket", sock)
		if err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := Identify(c, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id.UID != 0 || id.Name != "root" || !id.Admin || id.PID != os.Getpid() {
		t.Errorf("identity = %+v, want root (admin) with this process's pid", id)
	}
}
