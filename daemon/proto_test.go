package daemon

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
)

func packetPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "p.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestProtocolCarriesFiles(t *testing.T) {
	client, server := packetPair(t)
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	req := Request{Op: OpRun, Run: &RunArgs{Command: []string{"python", "train.py"}, Dir: "/home/a", CPUs: 2}}
	if err := send(client, req, os.Stdin, f, f); err != nil {
		t.Fatal(err)
	}
	var got Request
	files, err := recv(server, &got)
	if err != nil {
		t.Fatal(err)
	}
	defer closeAll(files)
	if got.Op != OpRun || got.Run == nil || got.Run.CPUs != 2 || got.Run.Command[1] != "train.py" || len(files) != 3 {
		t.Fatalf("got %+v with %d files", got, len(files))
	}
	// What the daemon writes to the passed file lands in the caller's.
	if _, err := files[1].WriteString("from the daemon"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f.Name())
	if string(b) != "from the daemon" {
		t.Errorf("passed file got %q", b)
	}
}

func TestProtocolBadMessages(t *testing.T) {
	client, server := packetPair(t)
	client.Write([]byte("{not json"))
	var r Request
	if _, err := recv(server, &r); err == nil {
		t.Error("bad JSON accepted")
	}
	big := make([]byte, maxMessage+1)
	if err := send(client, string(big)); err == nil {
		t.Error("oversized message sent")
	}
	client.Close()
	if _, err := recv(server, &r); !errors.Is(err, io.EOF) {
		t.Errorf("closed peer: %v", err)
	}
}
