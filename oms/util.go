package oms

import (
	"crypto/sha256"
	"encoding/hex"
	"path"
)

func cleanSlash(p string) string { return path.Clean(p) }

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
