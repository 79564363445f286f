package audit

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
)

func TestJournalSink(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "journal.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if !JournalPresent(sock) {
		t.Fatal("JournalPresent = false for a socket")
	}
	j := &JournalSink{Socket: sock}
	defer j.Close()
	l, err := Open(filepath.Join(t.TempDir(), "a.jsonl"), Options{Sinks: []EventSink{j}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	ev, err := l.Append(ctx, "j9", "alice", Kill{Signal: "SIGKILL", Reason: "user"})
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	got := string(buf[:n])
	for _, want := range []string{
		"SYSLOG_IDENTIFIER=securetrain-audit\n",
		"MESSAGE=audit seq 1 kill job j9 user alice\n",
		"PRIORITY=4\n",
		"SECURETRAIN_AUDIT_HASH=" + ev.Hash + "\n",
		"SECURETRAIN_AUDIT_LINE={\"seq\":1,",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("datagram lacks %q:\n%s", want, got)
		}
	}
	// A checkpoint goes the same way.
	if err := j.Put(ctx, Checkpoint{Log: "n", Seq: 1, Head: ev.Hash}); err != nil {
		t.Fatal(err)
	}
	n, _ = conn.Read(buf)
	if !strings.Contains(string(buf[:n]), "SECURETRAIN_AUDIT_CHECKPOINT={\"log\":\"n\",\"seq\":1,") {
		t.Errorf("checkpoint datagram: %s", buf[:n])
	}
	// Multi-line values use the binary form.
	b := encodeJournal("x", [][2]string{{"MESSAGE", "a\nb"}})
	if want := "MESSAGE\n\x03\x00\x00\x00\x00\x00\x00\x00a\nb\n"; !strings.HasSuffix(string(b), want) {
		t.Errorf("binary field %q", b)
	}
}
