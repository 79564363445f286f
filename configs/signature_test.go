package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInputSignature: an OMS-signed model input needs a bundle and exactly
// one trust; sigstore is refused closed; every refusal names the field.
func TestInputSignature(t *testing.T) {
	base := "version: 1\nname: t\ninputs:\n  - name: m\n    kind: model\n    path: /models/m\n"
	ok := base + "    signature: {bundle: m.sig, key: pub.pem, allow_ignored: [README.md]}\n"
	if _, err := ParseProfile("p.yaml", []byte(ok)); err != nil {
		t.Fatalf("valid: %v", err)
	}
	okCA := base + "    signature: {bundle: m.sig, ca: ca.pem, identity: models@example.org}\n"
	if _, err := ParseProfile("p.yaml", []byte(okCA)); err != nil {
		t.Fatalf("valid ca: %v", err)
	}
	for _, tc := range []struct{ yaml, want string }{
		{base + "    sha256: " + strings.Repeat("a", 64) + "\n    signature: {bundle: m.sig, key: k}\n", "exactly one of sha256"},
		{base + "    signature: {key: k}\n", "inputs[0].signature.bundle"},
		{base + "    signature: {bundle: m.sig}\n", "exactly one trust"},
		{base + "    signature: {bundle: m.sig, key: k, ca: c, identity: x}\n", "exactly one trust"},
		{base + "    signature: {bundle: m.sig, ca: c}\n", "inputs[0].signature.identity"},
		{base + "    signature: {bundle: m.sig, key: k, identity: x}\n", "only with ca"},
		{base + "    signature: {bundle: m.sig, sigstore: trusted_root.json}\n", "sigstore method needs Fulcio and Rekor"},
		{base + "    signature: {bundle: m.sig, key: k, allow_ignored: [../x]}\n", "allow_ignored[0]"},
		{base + "    signature: {bundle: m.sig, key: k, allow_ignored: [\"*.md\"]}\n", "without globs"},
		{base + "    signature: {bundle: m.sig, key: k, typo: 1}\n", "typo"},
		{strings.Replace(base, "kind: model", "kind: dataset", 1) + "    signature: {bundle: m.sig, key: k}\n", "kind: model"},
	} {
		_, err := ParseProfile("p.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// TestHostOMSKey: oms_key and oms_certificate are absolute, the
// certificate only with a key.
func TestHostOMSKey(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"version: 1\nintegrity: {oms_key: rel.key}\n", "integrity.oms_key"},
		{"version: 1\nintegrity: {oms_certificate: /etc/c.pem}\n", "integrity.oms_certificate"},
	} {
		_, err := parseHost(t, tc.yaml)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := parseHost(t, "version: 1\nintegrity: {oms_key: /etc/o.key, oms_certificate: /etc/o.pem}\n"); err != nil {
		t.Fatal(err)
	}
}

func parseHost(t *testing.T, y string) (*Host, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "h.yaml")
	if err := os.WriteFile(f, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return LoadHost(f, true)
}
