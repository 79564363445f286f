package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
)

// DefaultJournalSocket is systemd-journald's native protocol socket.
const DefaultJournalSocket = "/run/systemd/journal/socket"

// JournalSink sends every event, and every checkpoint, to systemd-journald
// over its native datagram protocol. Journald forwarding to a remote host
// makes it a checkpoint store the node does not control.
type JournalSink struct {
	Socket     string // DefaultJournalSocket if empty
	Identifier string // SYSLOG_IDENTIFIER, "securetrain-audit" if empty

	mu   sync.Mutex
	conn *net.UnixConn
}

// JournalPresent reports whether a journald socket exists at path.
func JournalPresent(path string) bool {
	if path == "" {
		path = DefaultJournalSocket
	}
	st, err := os.Stat(path)
	return err == nil && st.Mode()&os.ModeSocket != 0
}

// Send implements EventSink.
func (j *JournalSink) Send(ev Event, line []byte) error {
	prio := "6" // info
	switch ev.Type {
	case TypeViolation, TypeKill, TypeRecovered:
		prio = "4" // warning
	}
	msg := fmt.Sprintf("audit seq %d %s", ev.Seq, ev.Type)
	if ev.Job != "" {
		msg += " job " + ev.Job
	}
	if ev.User != "" {
		msg += " user " + ev.User
	}
	return j.send([][2]string{
		{"MESSAGE", msg},
		{"PRIORITY", prio},
		{"SECURETRAIN_AUDIT_SEQ", strconv.FormatUint(ev.Seq, 10)},
		{"SECURETRAIN_AUDIT_TYPE", string(ev.Type)},
		{"SECURETRAIN_AUDIT_HASH", ev.Hash},
		{"SECURETRAIN_JOB", ev.Job},
		{"SECURETRAIN_AUDIT_LINE", strings.TrimSuffix(string(line), "\n")},
	})
}

// Put implements CheckpointSink.
func (j *JournalSink) Put(_ context.Context, c Checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return j.send([][2]string{
		{"MESSAGE", fmt.Sprintf("audit checkpoint %s seq %d head %s", c.Log, c.Seq, c.Head)},
		{"PRIORITY", "6"},
		{"SECURETRAIN_AUDIT_CHECKPOINT", string(b)},
	})
}

// encodeJournal builds one native-protocol datagram. Values with a newline
// use the binary form (name, newline, little-endian 64-bit length, value).
func encodeJournal(ident string, fields [][2]string) []byte {
	var buf bytes.Buffer
	all := append([][2]string{{"SYSLOG_IDENTIFIER", ident}}, fields...)
	for _, kv := range all {
		if kv[1] == "" {
			continue
		}
		buf.WriteString(kv[0])
		if strings.ContainsRune(kv[1], '\n') {
			buf.WriteByte('\n')
			_ = binary.Write(&buf, binary.LittleEndian, uint64(len(kv[1])))
			buf.WriteString(kv[1])
			buf.WriteByte('\n')
			continue
		}
		buf.WriteByte('=')
		buf.WriteString(kv[1])
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

func (j *JournalSink) send(fields [][2]string) error {
	ident := j.Identifier
	if ident == "" {
		ident = "securetrain-audit"
	}
	sock := j.Socket
	if sock == "" {
		sock = DefaultJournalSocket
	}
	msg := encodeJournal(ident, fields)
	j.mu.Lock()
	defer j.mu.Unlock()
	var err error
	for range 2 {
		if j.conn == nil {
			j.conn, err = net.DialUnix("unixgram", nil, &net.UnixAddr{Name: sock, Net: "unixgram"})
			if err != nil {
				return fmt.Errorf("journal %s: %w", sock, err)
			}
		}
		if _, err = j.conn.Write(msg); err == nil {
			return nil
		}
		j.conn.Close()
		j.conn = nil
	}
	return fmt.Errorf("journal %s: %w (a line too large for one datagram is not sent)", sock, err)
}

// Close closes the socket.
func (j *JournalSink) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.conn != nil {
		err := j.conn.Close()
		j.conn = nil
		return err
	}
	return nil
}
