package oms

import (
	"encoding/json"
	"testing"
)

// checkSchemas fails the test for every OMS schema constraint b breaks.
func checkSchemas(t *testing.T, b []byte) {
	t.Helper()
	for _, v := range SchemaViolations(b) {
		t.Error("schema: " + v)
	}
}

// TestSchemaChecksCatch: the schema checks themselves reject what the
// schemas reject (a check that passes everything proves nothing).
func TestSchemaChecksCatch(t *testing.T) {
	k := p256(t)
	good := foreignBundle(t, k, modelFiles, shape{keyid: "empty"})
	for name, mut := range map[string]func(map[string]any){
		"extra top-level field": func(m map[string]any) { m["x"] = 1 },
		"no publicKey material": func(m map[string]any) { m["verificationMaterial"] = map[string]any{} },
		"empty signatures":      func(m map[string]any) { m["dsseEnvelope"].(map[string]any)["signatures"] = []any{} },
		"keyid number": func(m map[string]any) {
			m["dsseEnvelope"].(map[string]any)["signatures"].([]any)[0].(map[string]any)["keyid"] = 3
		},
		"bad media type": func(m map[string]any) { m["mediaType"] = "application/json" },
	} {
		var m map[string]any
		json.Unmarshal(good, &m)
		mut(m)
		b, _ := json.Marshal(m)
		if len(SchemaViolations(b)) == 0 {
			t.Errorf("%s: schema checks passed", name)
		}
	}
	if v := SchemaViolations(good); len(v) > 0 {
		t.Errorf("a good bundle fails the schema checks: %v", v)
	}
}
