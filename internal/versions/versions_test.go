package versions

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func TestPinned(t *testing.T) {
	// A Go pseudo-version: gVisor publishes no tagged Go module releases.
	if !regexp.MustCompile(`^v0\.0\.0-[0-9]{14}-[0-9a-f]{12}$`).MatchString(GVisor) {
		t.Errorf("GVisor = %q, want a pseudo-version v0.0.0-YYYYMMDDHHMMSS-<12 hex>", GVisor)
	}
	if !regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+$`).MatchString(Vault) {
		t.Errorf("Vault = %q, want vMAJOR.MINOR.PATCH", Vault)
	}
	// tools/vault builds the Vault its go.mod requires: the same one.
	b, err := os.ReadFile("../../tools/vault/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if want := "require github.com/hashicorp/vault " + Vault + "\n"; !strings.Contains(string(b), want) {
		t.Errorf("tools/vault/go.mod does not say %q", strings.TrimSpace(want))
	}
	// tools/runsc builds the runsc its go.mod requires: the same one.
	if b, err = os.ReadFile("../../tools/runsc/go.mod"); err != nil {
		t.Fatal(err)
	}
	if want := "require gvisor.dev/gvisor " + GVisor + "\n"; !strings.Contains(string(b), want) {
		t.Errorf("tools/runsc/go.mod does not say %q", strings.TrimSpace(want))
	}
	if !strings.HasPrefix(RunscTool, "runsc-"+GVisor+"-") {
		t.Errorf("RunscTool = %q, want runsc-%s-BUILD", RunscTool, GVisor)
	}
}

func TestParse(t *testing.T) {
	got, err := parse("# comment\n\nA=1\n  B=v2  \n")
	if err != nil || len(got) != 2 || got["A"] != "1" || got["B"] != "v2" {
		t.Errorf("parse = %v, %v", got, err)
	}
	for _, bad := range []string{"A", "=1", "A=", "A=${B}", `A="1"`, "A=1 2", "export A=1"} {
		if _, err := parse(bad); err == nil {
			t.Errorf("parse(%q): no error", bad)
		}
	}
}
