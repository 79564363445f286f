package oms

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
)

// SchemaViolations lists every constraint of the four OMS v1.0 JSON schemas
// (bundle, envelope, statement, predicate; draft 2020-12) that the bundle b
// breaks, written out as Go checks: each message names the schema keyword it
// comes from. Sigstore-owned parts (tlogEntries, timestamps) are checked
// structurally, as the bundle schema does. Sign runs it on every bundle it
// writes.
func SchemaViolations(b []byte) (out []string) {
	fail := func(format string, a ...any) { out = append(out, fmt.Sprintf(format, a...)) }
	var bundle map[string]any
	if err := json.Unmarshal(b, &bundle); err != nil {
		fail("bundle is not a JSON object: %v", err)
		return out
	}
	// bundle: required [mediaType, verificationMaterial, dsseEnvelope],
	// additionalProperties false, mediaType pattern.
	onlyKeys(fail, "bundle", bundle, []string{"mediaType", "verificationMaterial", "dsseEnvelope"}, []string{"mediaType", "verificationMaterial", "dsseEnvelope"})
	if mt, ok := bundle["mediaType"].(string); !ok || !regexp.MustCompile(`^application/vnd\.dev\.sigstore\.bundle`).MatchString(mt) {
		fail("bundle.mediaType %v: type string, pattern ^application/vnd\\.dev\\.sigstore\\.bundle", bundle["mediaType"])
	}
	// bundle $defs/verification_material: object, anyOf key | certificate | sigstore.
	vm, ok := bundle["verificationMaterial"].(map[string]any)
	if !ok {
		fail("verificationMaterial: type object")
		return out
	}
	matched := 0
	if pk, ok := vm["publicKey"]; ok {
		// public_key_identifier: object, anyOf required hint | rawBytes, both strings.
		m, ok := pk.(map[string]any)
		_, h := m["hint"]
		_, r := m["rawBytes"]
		if ok && (h || r) && isStringOrAbsent(m, "hint") && isStringOrAbsent(m, "rawBytes") {
			matched++
		} else {
			fail("publicKey %v: object with hint or rawBytes strings", pk)
		}
	}
	if ch, ok := vm["x509CertificateChain"]; ok {
		// x509_certificate_chain: required certificates, array minItems 1 of x509_certificate.
		m, ok := ch.(map[string]any)
		cs, ok2 := m["certificates"].([]any)
		if ok && ok2 && len(cs) >= 1 && allCerts(cs) {
			matched++
		} else {
			fail("x509CertificateChain %v: certificates, minItems 1, each {rawBytes: string minLength 1}", ch)
		}
	}
	if c, ok := vm["certificate"]; ok {
		if _, ok := vm["tlogEntries"]; ok && allCerts([]any{c}) {
			matched++
		} else {
			fail("certificate needs rawBytes and tlogEntries (sigstore branch)")
		}
	}
	if matched == 0 {
		fail("verificationMaterial matches none of anyOf key, certificate, sigstore")
	}
	if te, ok := vm["tlogEntries"]; ok {
		if _, ok := te.([]any); !ok {
			fail("tlogEntries: type array")
		}
	}
	if tv, ok := vm["timestampVerificationData"]; ok {
		if _, ok := tv.(map[string]any); !ok {
			fail("timestampVerificationData: type object")
		}
	}
	// envelope: required [payload, payloadType, signatures],
	// additionalProperties false, payload string minLength 1, payloadType
	// const, signatures minItems 1 of {sig: string minLength 1 (required),
	// keyid: string|null}, additionalProperties false.
	env, ok := bundle["dsseEnvelope"].(map[string]any)
	if !ok {
		fail("dsseEnvelope: type object")
		return out
	}
	all := []string{"payload", "payloadType", "signatures"}
	onlyKeys(fail, "envelope", env, all, all)
	if s, ok := env["payload"].(string); !ok || len(s) < 1 {
		fail("envelope.payload: string, minLength 1")
	}
	if env["payloadType"] != "application/vnd.in-toto+json" {
		fail("envelope.payloadType: const application/vnd.in-toto+json, got %v", env["payloadType"])
	}
	sigs, ok := env["signatures"].([]any)
	if !ok || len(sigs) < 1 {
		fail("envelope.signatures: array, minItems 1")
	}
	for i, s := range sigs {
		m, ok := s.(map[string]any)
		if !ok {
			fail("signatures[%d]: object", i)
			continue
		}
		onlyKeys(fail, "signature", m, []string{"sig"}, []string{"sig", "keyid"})
		if v, ok := m["sig"].(string); !ok || v == "" {
			fail("signatures[%d].sig: string, minLength 1", i)
		}
		if k, ok := m["keyid"]; ok && k != nil {
			if _, ok := k.(string); !ok {
				fail("signatures[%d].keyid: string or null", i)
			}
		}
	}
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		fail("payload is not base64: %v", err)
		return out
	}
	var st map[string]any
	if err := json.Unmarshal(payload, &st); err != nil {
		fail("statement: type object: %v", err)
		return out
	}
	// statement: required [_type, subject, predicateType, predicate],
	// additionalProperties false, _type const, subject minItems 1 maxItems
	// 1 of {name: string minLength 1, digest: digest_set (minProperties 1,
	// values ^[0-9a-f]+$)}, predicateType const.
	all = []string{"_type", "subject", "predicateType", "predicate"}
	onlyKeys(fail, "statement", st, all, all)
	if st["_type"] != "https://in-toto.io/Statement/v1" {
		fail("statement._type: const https://in-toto.io/Statement/v1")
	}
	if st["predicateType"] != "https://model_signing/signature/v1.0" {
		fail("statement.predicateType: const https://model_signing/signature/v1.0")
	}
	hexRe := regexp.MustCompile(`^[0-9a-f]+$`)
	subj, ok := st["subject"].([]any)
	if !ok || len(subj) != 1 {
		fail("statement.subject: array, minItems 1, maxItems 1")
	}
	for _, s := range subj {
		m, _ := s.(map[string]any)
		if n, ok := m["name"].(string); !ok || n == "" {
			fail("subject.name: string, minLength 1")
		}
		d, ok := m["digest"].(map[string]any)
		if !ok || len(d) < 1 {
			fail("subject.digest: object, minProperties 1")
		}
		for k, v := range d {
			if s, ok := v.(string); !ok || !hexRe.MatchString(s) {
				fail("subject.digest.%s: string, pattern ^[0-9a-f]+$", k)
			}
		}
	}
	// predicate: required [resources, serialization], additionalProperties
	// false; resources: array of {name: string minLength 1, digest:
	// ^[0-9a-f]+$, algorithm: enum} (additional properties allowed).
	pr, ok := st["predicate"].(map[string]any)
	if !ok {
		fail("predicate: type object")
		return out
	}
	all = []string{"resources", "serialization"}
	onlyKeys(fail, "predicate", pr, all, all)
	algs := []string{"sha256", "blake2b", "blake3"}
	res, ok := pr["resources"].([]any)
	if !ok {
		fail("predicate.resources: type array")
	}
	for i, r := range res {
		m, ok := r.(map[string]any)
		if !ok {
			fail("resources[%d]: object", i)
			continue
		}
		if n, ok := m["name"].(string); !ok || n == "" {
			fail("resources[%d].name: string, minLength 1", i)
		}
		if d, ok := m["digest"].(string); !ok || !hexRe.MatchString(d) {
			fail("resources[%d].digest: pattern ^[0-9a-f]+$", i)
		}
		if a, ok := m["algorithm"].(string); !ok || !slices.Contains(algs, a) {
			fail("resources[%d].algorithm: enum %v", i, algs)
		}
	}
	// serialization: required [method, hash_type, allow_symlinks],
	// additionalProperties false, method enum, hash_type enum, shard_size
	// integer > 0, allow_symlinks boolean, ignore_paths array of strings
	// minLength 1; if method == shards then shard_size required. (The
	// spec's prose adds: shard_size absent with files.)
	se, ok := pr["serialization"].(map[string]any)
	if !ok {
		fail("serialization: type object")
		return out
	}
	onlyKeys(fail, "serialization", se, []string{"method", "hash_type", "allow_symlinks"}, []string{"method", "hash_type", "allow_symlinks", "shard_size", "ignore_paths"})
	if m, _ := se["method"].(string); !slices.Contains([]string{"files", "shards"}, m) {
		fail("serialization.method: enum files, shards")
	}
	if h, _ := se["hash_type"].(string); !slices.Contains(algs, h) {
		fail("serialization.hash_type: enum %v", algs)
	}
	if _, ok := se["allow_symlinks"].(bool); !ok {
		fail("serialization.allow_symlinks: type boolean")
	}
	if ss, ok := se["shard_size"]; ok {
		f, ok := ss.(float64)
		if !ok || f != float64(int64(f)) || f <= 0 {
			fail("serialization.shard_size: integer, exclusiveMinimum 0")
		}
	}
	if se["method"] == "shards" {
		if _, ok := se["shard_size"]; !ok {
			fail("serialization: shards requires shard_size")
		}
	} else if _, ok := se["shard_size"]; ok {
		fail("serialization: shard_size must be absent with files (spec §5.2.2)")
	}
	if ip, ok := se["ignore_paths"]; ok {
		a, ok := ip.([]any)
		if !ok {
			fail("serialization.ignore_paths: type array")
		}
		for _, p := range a {
			if s, ok := p.(string); !ok || s == "" {
				fail("serialization.ignore_paths items: string, minLength 1")
			}
		}
	}
	return out
}

func onlyKeys(fail func(string, ...any), what string, m map[string]any, required, allowed []string) {
	for _, k := range required {
		if _, ok := m[k]; !ok {
			fail("%s: required %q missing", what, k)
		}
	}
	for k := range m {
		if !slices.Contains(allowed, k) {
			fail("%s: additionalProperties false, got %q", what, k)
		}
	}
}

func isStringOrAbsent(m map[string]any, k string) bool {
	v, ok := m[k]
	if !ok {
		return true
	}
	_, ok = v.(string)
	return ok
}

func allCerts(cs []any) bool {
	for _, c := range cs {
		m, ok := c.(map[string]any)
		if !ok {
			return false
		}
		if s, ok := m["rawBytes"].(string); !ok || s == "" {
			return false
		}
	}
	return true
}
