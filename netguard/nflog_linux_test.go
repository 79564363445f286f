package netguard

import (
	"encoding/hex"
	"testing"
)

func TestDecodePacket(t *testing.T) {
	for _, tc := range []struct {
		hex   string
		proto string
		dst   string
		port  int
	}{
		// IPv4 TCP SYN 10.215.0.2 -> 10.214.2.2:8080
		{"45000028000040004006000 00ad70002 0ad60202 c3501f90 0000000000000000 50020000 00000000", "tcp", "10.214.2.2", 8080},
		// IPv4 ICMP echo to 10.214.2.2
		{"4500001c00004000400100000ad700020ad602020800f7ff00000000", "icmp", "10.214.2.2", 0},
		// IPv6 UDP to fd99::2 port 53
		{"6000000000081140fd990000000000000000000000000001fd990000000000000000000000000002c35000350008 0000", "udp", "fd99::2", 53},
	} {
		b, err := hex.DecodeString(stripSpaces(tc.hex))
		if err != nil {
			t.Fatal(err)
		}
		proto, dst, port := decodePacket(b)
		if proto != tc.proto || dst.String() != tc.dst || port != tc.port {
			t.Errorf("decodePacket = %s %s %d, want %s %s %d", proto, dst, port, tc.proto, tc.dst, tc.port)
		}
	}
	if _, dst, _ := decodePacket([]byte{0x45, 0}); dst.IsValid() {
		t.Error("short packet decoded")
	}
}

func stripSpaces(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			out = append(out, s[i])
		}
	}
	return string(out)
}
