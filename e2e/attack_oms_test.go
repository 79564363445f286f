package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/oms"
)

// A model publisher's signed model, and an attacker who can write to where
// the model is stored (a mirror, a shared file system) but does not hold the
// publisher's key. Each case runs a job that would print the model's
// weights; the figure is the bytes of the attacker's content that reached
// the job (0 when the job was refused before it started).

// poisonedRun runs a job over the signed model (trusting pub) that prints
// every file it sees, and returns the result and how many bytes of marker
// reached its stdout.
func poisonedRun(t *testing.T, e *env, model, sig, pub, marker string) (result, int) {
	t.Helper()
	dir := e.project(t, nil)
	r := e.job(t, dir, []string{"--model", model, "--model-signature", sig, "--model-key", pub},
		"/bin/sh", "-c", "find /inputs/model -type f -exec cat {} +")
	return r, strings.Count(r.stdout, marker) * len(marker)
}

// TestAttackPoisonedModelSwappedWeights: the attacker rewrites the signed
// weights file in place (same name, same size).
func TestAttackPoisonedModelSwappedWeights(t *testing.T) {
	e := setup(t)
	model, sig, pub := signedModel(t)
	marker := `{"w": [6.6, 6.6, 6.6, 6.6]}` + "\n" // as long as the signed weights
	os.WriteFile(filepath.Join(model, "weights.json"), []byte(marker), 0o644)
	r, through := poisonedRun(t, e, model, sig, pub, marker)
	attackFigure(t, "bytes_through=%d", through)
	if r.code != 125 || through != 0 || !strings.Contains(r.stderr, filepath.Join(model, "weights.json")+": sha256") {
		t.Fatalf("a swapped weights file must be refused, naming it: %s", r)
	}
}

// TestAttackPoisonedModelExtraPickle: the attacker adds an unsigned file
// the job's loader would pick up (a second checkpoint next to the signed
// ones).
func TestAttackPoisonedModelExtraPickle(t *testing.T) {
	e := setup(t)
	model, sig, pub := signedModel(t)
	marker := "ATTACKER-EXTRA-CHECKPOINT\n"
	os.WriteFile(filepath.Join(model, "pytorch_model.txt"), []byte(marker), 0o644)
	r, through := poisonedRun(t, e, model, sig, pub, marker)
	attackFigure(t, "bytes_through=%d", through)
	if r.code != 125 || through != 0 || !strings.Contains(r.stderr, "pytorch_model.txt") || !strings.Contains(r.stderr, "not in manifest") {
		t.Fatalf("an unsigned extra file must be refused, naming it: %s", r)
	}
}

// TestAttackPoisonedModelResignedUnderPublisherHint: the attacker changes
// the weights and re-signs the model with a key of their own, writing the
// publisher's key hint into the bundle so it names the trusted key.
func TestAttackPoisonedModelResignedUnderPublisherHint(t *testing.T) {
	e := setup(t)
	model, sig, pub := signedModel(t)
	marker := `{"w": [9.9, 9.9, 9.9, 9.9]}` + "\n"
	os.WriteFile(filepath.Join(model, "weights.json"), []byte(marker), 0o644)
	ak, _ := oms.NewKeySigner(testenv.P256(t), nil)
	signModel(t, model, ak)
	var b map[string]any
	json.Unmarshal(mustRead(t, sig), &b)
	hint, _ := oms.KeyHint(mustPub(t, pub))
	b["verificationMaterial"] = map[string]any{"publicKey": map[string]string{"hint": hint}}
	forged, _ := json.Marshal(b)
	os.WriteFile(sig, forged, 0o644)
	r, through := poisonedRun(t, e, model, sig, pub, marker)
	attackFigure(t, "bytes_through=%d", through)
	if r.code != 125 || through != 0 || !strings.Contains(r.stderr, "does not verify") {
		t.Fatalf("a bundle signed by another key under the publisher's hint must be refused: %s", r)
	}
	// Without the hint: the bundle names the attacker's key, the wrong one.
	signModel(t, model, ak)
	r, through = poisonedRun(t, e, model, sig, pub, marker)
	if r.code != 125 || through != 0 || !strings.Contains(r.stderr, "wrong key") {
		t.Fatalf("a bundle signed by another key must be refused as the wrong key: %s", r)
	}
}
