package launcher

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/provenance"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/scan"
	"github.com/securetrain/securetrain/signing"
	"github.com/securetrain/securetrain/usage"
	"github.com/securetrain/securetrain/violation"
)

// A protocol-0 pickle whose load calls os.system.
const evilPickle = "cos\nsystem\n(S'echo pwned'\ntR."

type inputsFixture struct {
	l    *Launcher
	root string // world-readable work directory
	pl   func(inputs ...configs.Input) *plan
}

func newInputsFixture(t *testing.T) *inputsFixture {
	t.Helper()
	testenv.RequireRoot(t)
	r := t.TempDir()
	// The job's user (nobody) must reach the inputs.
	os.Chmod(filepath.Dir(r), 0o755)
	os.Chmod(r, 0o755)
	l := &Launcher{Host: &configs.Host{StateDir: filepath.Join(r, "run"), DataDir: filepath.Join(r, "lib")},
		Runsc: filepath.Join(r, "no-runsc"), Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	code := filepath.Join(r, "code")
	os.MkdirAll(code, 0o755)
	f := &inputsFixture{l: l, root: r}
	f.pl = func(inputs ...configs.Input) *plan {
		p, err := configs.LoadProfile("default", "")
		if err != nil {
			t.Fatal(err)
		}
		for i := range inputs {
			if inputs[i].Kind == "" {
				inputs[i].Kind = "dataset"
			}
		}
		p.Inputs = inputs
		return &plan{
			req:  Request{Command: []string{"/bin/true"}, Caller: Caller{UID: 65534, GID: 65534, Name: "nobody", Home: "/nonexistent"}},
			prof: p, user: sandbox.User{Name: "nobody", UID: 65534, GID: 65534, Home: "/nonexistent"},
			codeDir: code, outputDir: filepath.Join(code, "outputs"),
		}
	}
	return f
}

func (f *inputsFixture) file(t *testing.T, rel, body string, mode os.FileMode) (string, string) {
	t.Helper()
	p := filepath.Join(f.root, rel)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, mode)
	s := sha256.Sum256([]byte(body))
	return p, hex.EncodeToString(s[:])
}

func (f *inputsFixture) manifest(t *testing.T, dir string) string {
	t.Helper()
	es, err := pin.Manifest(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	pin.WriteManifest(&b, es)
	p, _ := f.file(t, filepath.Base(dir)+".sha256", b.String(), 0o644)
	return p
}

func TestInputsVerifiedMountedCachedAndRefused(t *testing.T) {
	f := newInputsFixture(t)
	f.file(t, "train/a.txt", "alpha\n", 0o644)
	f.file(t, "train/sub/b.txt", "beta\n", 0o644)
	data := filepath.Join(f.root, "train")
	m := f.manifest(t, data)
	w, wsum := f.file(t, "w.bin", "weights", 0o644)
	inputs := []configs.Input{{Name: "train", Path: data, Manifest: m}, {Path: w, SHA256: wsum, Target: "/models/w.bin"}}
	ctx := context.Background()

	pl := f.pl(inputs...)
	if err := f.l.prepareInputs(ctx, pl); err != nil {
		t.Fatal(err)
	}
	want := []sandbox.Mount{
		{Kind: sandbox.Bind, Source: data, Target: "/inputs/train", ReadOnly: true},
		{Kind: sandbox.Bind, Source: w, Target: "/models/w.bin", ReadOnly: true},
	}
	if len(pl.integrity.mounts) != 2 || pl.integrity.mounts[0] != want[0] || pl.integrity.mounts[1] != want[1] {
		t.Fatalf("mounts = %+v, want %+v", pl.integrity.mounts, want)
	}
	if st := pl.integrity.stats; st.Files != 3 || st.Hashed != 3 {
		t.Fatalf("first verification must hash 3 files: %+v", st)
	}
	if fi, err := os.Stat(f.l.PinCacheDir()); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache dir: %v %v", fi, err)
	}
	if err := f.l.newJob("", pl).recheckInputs(ctx); err != nil {
		t.Fatalf("recheck of unchanged inputs: %v", err)
	}

	pl = f.pl(inputs...)
	if err := f.l.prepareInputs(ctx, pl); err != nil || pl.integrity.stats.Cached != 3 || pl.integrity.stats.Hashed != 0 {
		t.Fatalf("an unchanged re-run must come from the cache: %v %+v", err, pl.integrity.stats)
	}

	// Changed between verification and start: refused before runsc runs.
	a := filepath.Join(data, "a.txt")
	os.WriteFile(a, []byte("poison\n"), 0o644)
	if err := f.l.newJob("", pl).recheckInputs(ctx); err == nil || !strings.Contains(err.Error(), a+" (modified)") {
		t.Fatalf("recheck before start must name the changed file: %v", err)
	}
	// And at the next run, refused naming the file and both digests.
	s1, s2 := sha256.Sum256([]byte("alpha\n")), sha256.Sum256([]byte("poison\n"))
	err := f.l.prepareInputs(ctx, f.pl(inputs...))
	if err == nil || strings.Contains(err.Error(), "\n") ||
		!strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), hex.EncodeToString(s1[:])) || !strings.Contains(err.Error(), hex.EncodeToString(s2[:])) {
		t.Fatalf("want one line naming %s and both digests, got %v", a, err)
	}
}

func TestInputRefusals(t *testing.T) {
	f := newInputsFixture(t)
	ctx := context.Background()
	secret, secretSum := f.file(t, "secret.key", "root only", 0o600)
	dir := filepath.Join(f.root, "ds")
	f.file(t, "ds/x", "x", 0o644)
	file, sum := f.file(t, "one.bin", "1", 0o644)
	cases := []struct {
		name   string
		in     []configs.Input
		want   string
		absent string
	}{
		{"unreadable by the user", []configs.Input{{Path: secret, SHA256: strings.Repeat("0", 64)}}, "the job's user nobody must be able to read it", secretSum},
		{"directory pinned by sha256", []configs.Input{{Path: dir, SHA256: sum}}, "is a directory: pin it with manifest:", ""},
		{"file pinned by manifest", []configs.Input{{Path: file, Manifest: "/x"}}, "is not a directory: pin it with sha256:", ""},
		{"same target", []configs.Input{{Path: file, SHA256: sum, Target: "/in/x"}, {Path: file, SHA256: sum, Target: "/in/x"}}, "target /in/x is already used", ""},
		{"target over the code dir", []configs.Input{{Path: file, SHA256: sum, Target: filepath.Join(f.root, "code")}}, "would hide the code", ""},
		{"missing", []configs.Input{{Path: filepath.Join(f.root, "nope"), SHA256: sum}}, "no such file or directory", ""},
		{"relative manifest of a builtin profile", []configs.Input{{Path: dir, Manifest: "ds.sha256"}}, "give an absolute path", ""},
	}
	for _, c := range cases {
		err := f.l.prepareInputs(ctx, f.pl(c.in...))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: want one line containing %q, got %v", c.name, c.want, err)
		}
		if c.absent != "" && err != nil && strings.Contains(err.Error(), c.absent) {
			t.Errorf("%s: the error reveals the digest of a file the user cannot read: %v", c.name, err)
		}
	}
}

func TestModelInputsScanned(t *testing.T) {
	f := newInputsFixture(t)
	ctx := context.Background()
	evil, sum := f.file(t, "evil.pkl", evilPickle, 0o644)
	err := f.l.prepareInputs(ctx, f.pl(configs.Input{Kind: "model", Path: evil, SHA256: sum}))
	var re *scan.ModelRefusedError
	if !errors.As(err, &re) || re.Digest != sum || !strings.Contains(err.Error(), "system") {
		t.Fatalf("a pickle calling os.system must be refused with its digest: %v", err)
	}
	if err := f.l.prepareInputs(ctx, f.pl(configs.Input{Kind: "model", Path: evil, SHA256: sum, Accept: []string{sum}})); err != nil {
		t.Fatalf("accepted by digest: %v", err)
	}
	// As a dataset it is data: not scanned.
	if err := f.l.prepareInputs(ctx, f.pl(configs.Input{Kind: "dataset", Path: evil, SHA256: sum})); err != nil {
		t.Fatalf("dataset: %v", err)
	}
	// Inside a model directory.
	f.file(t, "m/config.json", "{}", 0o644)
	f.file(t, "m/sub/evil.bin", evilPickle, 0o644)
	md := filepath.Join(f.root, "m")
	m := f.manifest(t, md)
	err = f.l.prepareInputs(ctx, f.pl(configs.Input{Kind: "model", Path: md, Manifest: m}))
	if !errors.As(err, &re) || re.Digest != sum || !strings.Contains(err.Error(), "m/sub/evil.bin") {
		t.Fatalf("a dangerous file in a model directory must be refused: %v", err)
	}
	if err := f.l.prepareInputs(ctx, f.pl(configs.Input{Kind: "model", Path: md, Manifest: m, Accept: []string{sum}})); err != nil {
		t.Fatalf("accepted by digest in a directory: %v", err)
	}
}

func TestProvenanceNeedsASigner(t *testing.T) {
	f := newInputsFixture(t)
	pl := f.pl()
	pl.prof.Integrity.Provenance = true
	f.l.Host.Source = "/etc/securetrain/test.yaml"
	err := f.l.prepareInputs(context.Background(), pl)
	if err == nil || !strings.Contains(err.Error(), "set integrity.signing_key or integrity.transit_key in /etc/securetrain/test.yaml") {
		t.Fatalf("a profile asking for provenance on a host that cannot sign must be refused: %v", err)
	}
	f.l.Host.Integrity.SigningKey = filepath.Join(f.root, "missing.key")
	if err := f.l.prepareInputs(context.Background(), f.pl()); err == nil || !strings.Contains(err.Error(), "integrity.signing_key") {
		t.Fatalf("an unloadable host key must refuse every job: %v", err)
	}
}

func TestFinishInputsRecheckAndAttestation(t *testing.T) {
	f := newInputsFixture(t)
	ctx := context.Background()
	key, pubFile := filepath.Join(f.root, "k"), filepath.Join(f.root, "k.pub")
	pub, err := signing.GenerateKeyFiles(key, pubFile)
	if err != nil {
		t.Fatal(err)
	}
	f.l.Host.Integrity.SigningKey = key
	in, sum := f.file(t, "data.csv", "1,2\n", 0o644)
	pl := f.pl(configs.Input{Name: "data", Path: in, SHA256: sum})
	if err := f.l.prepareInputs(ctx, pl); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(pl.outputDir, 0o755)
	f.file(t, "code/outputs/model.txt", "trained", 0o644)
	finish := func(id string) *Result {
		t.Helper()
		os.MkdirAll(filepath.Join(f.l.Host.DataDir, "jobs", id), 0o711)
		res := &Result{ID: id, Command: []string{"/bin/true"}, Outcome: OutcomeExited, Usage: &usage.Record{Job: id}}
		j := f.l.newJob(id, pl)
		j.res = res
		if err := j.finishInputs(ctx); err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := finish("0123456789ab")
	if res.ExitCode != 0 || res.Outcome != OutcomeExited || res.Attestation == "" {
		t.Fatalf("unchanged inputs: %+v", res)
	}
	env, _ := os.ReadFile(res.Attestation)
	st, err := provenance.Verify(ctx, env, pub, pl.outputDir)
	if err != nil || st.Predicate.BuildDefinition.InternalParameters.InputsRecheck != "unchanged" {
		t.Fatalf("attestation: %v %+v", err, st)
	}
	if fi, _ := os.Stat(res.Attestation); fi.Sys() == nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("attestation mode %v", fi.Mode())
	}

	os.WriteFile(in, []byte("9,9\n"), 0o644)
	res = finish("ba9876543210")
	if res.ExitCode != ExitPolicy || res.Outcome != OutcomeViolation || len(res.Violations) != 1 ||
		res.Violations[0].Kind != violation.Input || !strings.Contains(res.Reason, in+" (modified)") {
		t.Fatalf("an input changed during the run must fail it with exit 123: %+v", res)
	}
	env, _ = os.ReadFile(res.Attestation)
	st, err = provenance.Verify(ctx, env, pub, "")
	if err != nil || !strings.Contains(st.Predicate.BuildDefinition.InternalParameters.InputsRecheck, in+" (modified)") {
		t.Fatalf("the provenance must say the input changed: %v %+v", err, st.Predicate.BuildDefinition.InternalParameters)
	}
	found := false
	for _, d := range st.Predicate.BuildDefinition.ResolvedDependencies {
		if d.Name == "input:data" && d.Digest["sha256"] == sum {
			found = true
		}
	}
	if !found {
		t.Fatalf("the provenance must list the pinned input's digest: %+v", st.Predicate.BuildDefinition.ResolvedDependencies)
	}
}

func TestInputPathResolvedAsTheUser(t *testing.T) {
	f := newInputsFixture(t)
	hidden := filepath.Join(f.root, "hidden")
	os.MkdirAll(hidden, 0o700) // root's: nobody cannot look inside
	p, sum := f.file(t, "hidden/exists.bin", "x", 0o644)
	for _, in := range []string{p, filepath.Join(hidden, "absent.bin")} {
		err := f.l.prepareInputs(context.Background(), f.pl(configs.Input{Path: in, SHA256: sum}))
		if err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("%s: want permission denied whether or not it exists, got %v", in, err)
		}
	}
}

// TestInputsMountedAsVerified: the sandbox mounts the staged input, the
// directory that was opened after verification. A rename exchange of the
// input's path after staging changes nothing the job sees (and the checks
// pass: they look at what is mounted); one before staging is refused
// before the job starts, naming the input's own path.
func TestInputsMountedAsVerified(t *testing.T) {
	f := newInputsFixture(t)
	ctx := context.Background()
	f.file(t, "train/a.txt", "verified\n", 0o644)
	f.file(t, "evil/a.txt", "evil\n", 0o644)
	data, evil := filepath.Join(f.root, "train"), filepath.Join(f.root, "evil")
	m := f.manifest(t, data)
	exchange := func() {
		t.Helper()
		if err := unix.Renameat2(unix.AT_FDCWD, data, unix.AT_FDCWD, evil, unix.RENAME_EXCHANGE); err != nil {
			t.Fatal(err)
		}
	}
	verify := func() *plan {
		t.Helper()
		pl := f.pl(configs.Input{Name: "train", Path: data, Manifest: m})
		if err := f.l.prepareInputs(ctx, pl); err != nil {
			t.Fatal(err)
		}
		return pl
	}
	stage := func(pl *plan, id string) *job {
		t.Helper()
		h, err := f.l.Store().Create(JobState{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		j := f.l.newJob(id, pl)
		j.h = h
		j.undo.push(h.Remove)
		t.Cleanup(func() { j.undo.run() })
		if j.staged, err = f.l.stage(id, pl, h, &j.undo); err != nil {
			t.Fatal(err)
		}
		return j
	}

	pl := verify()
	j := stage(pl, "stagedinput1")
	exchange() // after staging: the job must not see it
	if err := j.recheckInputs(ctx); err != nil {
		t.Fatalf("the staged input is the verified one: %v", err)
	}
	src := j.staged.sources(pl.integrity.mounts)[0].Source
	if b, err := os.ReadFile(filepath.Join(src, "a.txt")); err != nil || string(b) != "verified\n" {
		t.Fatalf("the mount source shows %q (%v), not the verified content", b, err)
	}
	res := &Result{ID: "stagedinput1", Outcome: OutcomeExited}
	j.res = res
	if err := j.finishInputs(ctx); err != nil || len(res.Violations) != 0 {
		t.Fatalf("what the job saw did not change: %v %+v", err, res.Violations)
	}
	j.undo.run()
	exchange()

	pl = verify()
	exchange() // between verification and staging
	err := stage(pl, "stagedinput2").recheckInputs(ctx)
	if want := filepath.Join(data, "a.txt") + " (replaced)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("an input swapped before staging must be refused naming %s: %v", want, err)
	}
	exchange()
}

// TestSnapshotCodeMountsTheCopy: an attested job's code mount comes from a
// root-only copy without .git, credentials or what other mounts cover (an
// empty mount point stands there), and the digest is the copy's.
func TestSnapshotCodeMountsTheCopy(t *testing.T) {
	f := newInputsFixture(t)
	ctx := context.Background()
	key := filepath.Join(f.root, "k")
	if _, err := signing.GenerateKeyFiles(key, key+".pub"); err != nil {
		t.Fatal(err)
	}
	s, err := signing.LoadPrivateKeyFile(key)
	if err != nil {
		t.Fatal(err)
	}
	f.l.Host.Integrity.CodeSnapshotMax = 1 << 20
	f.file(t, "code/train.py", "print('v1')\n", 0o644)
	f.file(t, "code/.aws/credentials", "secret", 0o600)
	f.file(t, "code/.git/HEAD", "ref: refs/heads/main\n", 0o644)
	f.file(t, "code/outputs/old.pt", "ckpt", 0o644)
	f.file(t, "code/.venv/pyvenv.cfg", "home = /usr/bin\n", 0o644)
	pl := f.pl()
	code := pl.codeDir
	pl.mounts = []sandbox.Mount{{Kind: sandbox.Bind, Source: filepath.Join(code, ".venv"), Target: filepath.Join(code, ".venv"), ReadOnly: true}}
	pl.masks = []string{filepath.Join(code, ".aws")}
	pl.integrity.signer = s
	h, err := f.l.Store().Create(JobState{ID: "snapshottest"})
	if err != nil {
		t.Fatal(err)
	}
	j := f.l.newJob("snapshottest", pl)
	j.h = h
	undo := &j.undo
	undo.push(h.Remove)
	defer undo.run()
	if j.staged, err = f.l.stage("snapshottest", pl, h, undo); err != nil {
		t.Fatal(err)
	}
	jobData := filepath.Join(f.l.Host.DataDir, "jobs", "snapshottest")
	os.MkdirAll(jobData, 0o711)
	if err := j.snapshotCode(ctx); err != nil {
		t.Fatal(err)
	}
	src := j.staged.sources([]sandbox.Mount{{Kind: sandbox.Bind, Source: code, Target: code, ReadOnly: true}})[0].Source
	if masks := j.masks(); src != filepath.Join(jobData, "snapshot", "code") || masks != nil {
		t.Fatalf("code mount source %s, masks %v", src, masks)
	}
	if fi, err := os.Stat(filepath.Dir(src)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("the copy's parent must be root-only: %v %v", fi, err)
	}
	for rel, want := range map[string]bool{"train.py": true, ".aws": false, ".git": false, "outputs/old.pt": false, ".venv/pyvenv.cfg": false} {
		if _, err := os.Lstat(filepath.Join(src, rel)); (err == nil) != want {
			t.Errorf("%s in the copy: %v, want %v", rel, err == nil, want)
		}
	}
	for _, point := range []string{"outputs", ".venv"} {
		if fi, err := os.Stat(filepath.Join(src, point)); err != nil || !fi.IsDir() {
			t.Errorf("mount point %s missing in the copy: %v", point, err)
		}
	}
	if st := j.code.State; st.Files != 1 || st.Dir != code {
		t.Fatalf("the digest must cover train.py only: %+v", st)
	}
	f.file(t, "code/train.py", "print('v2')\n", 0o644)
	if b, _ := os.ReadFile(filepath.Join(src, "train.py")); string(b) != "print('v1')\n" {
		t.Fatalf("the copy followed the host: %q", b)
	}
	if _, err := undo.run(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(src)); !os.IsNotExist(err) {
		t.Fatalf("the copy must go with the job: %v", err)
	}
}
