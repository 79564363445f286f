package launcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/oneline"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/oms"
	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/provenance"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/scan"
	"github.com/securetrain/securetrain/signing"
	"github.com/securetrain/securetrain/violation"
)

// integrityPlan is what the integrity steps carry from prepare to the end of
// the job: verified inputs and their mounts.
type integrityPlan struct {
	mounts   []sandbox.Mount
	inputs   []verifiedInput
	snapshot *pin.Snapshot  // stat state of every input as verified
	stats    pin.Stats      // what verification cost
	signer   signing.Signer // nil: no provenance for this job
	sitePkgs []string       // Python package directories visible to the job
	// omsSigner signs the outputs as an OMS bundle (integrity.sign_outputs).
	omsSigner oms.Signer
}

// verifiedInput is one pinned input after verification.
type verifiedInput struct {
	Name   string
	Kind   string
	Path   string // resolved host path
	Target string // inside the sandbox
	Dir    bool
	SHA256 string // file digest, or the manifest digest of a directory
	// Signature: the input was verified by its OMS signature.
	Signature *modelSignature
}

// PinCacheDir is the verification cache under the host's data_dir.
func (l *Launcher) PinCacheDir() string { return filepath.Join(l.Host.DataDir, "pin-cache") }

// inputTarget is where an input appears inside the sandbox.
func inputTarget(in configs.Input, hostPath string) string {
	if in.Target != "" {
		return path.Clean(in.Target)
	}
	name := in.Name
	if name == "" {
		name = filepath.Base(hostPath)
	}
	return path.Join("/inputs", name)
}

// prepareInputs verifies the profile's pinned inputs (and scans model files)
// before anything is created, and loads the provenance signer, so that a job
// that cannot be attested never starts. Every refusal is one line.
func (l *Launcher) prepareInputs(ctx context.Context, pl *plan) error {
	p := pl.prof
	signer, err := l.provenanceSigner(ctx, p)
	if err != nil {
		return err
	}
	pl.integrity.signer = signer
	if pl.integrity.omsSigner, err = l.outputsSigner(p, signer); err != nil {
		return err
	}
	if signer != nil {
		pl.integrity.sitePkgs = l.sitePackages(pl)
	}
	if len(p.Inputs) == 0 {
		return nil
	}
	pins, err := pl.pinInputs()
	if err != nil {
		return err
	}
	if err := l.verifyInputs(ctx, pl, pins); err != nil {
		return err
	}
	// Model files: scanned after verification, so the bytes judged are
	// the pinned ones (a change after this is caught by the rechecks).
	for i, in := range p.Inputs {
		if in.Kind != "model" {
			continue
		}
		if err := checkModel(ctx, pl.integrity.inputs[i], pins[i], in.Accept); err != nil {
			return err
		}
	}
	for _, vi := range pl.integrity.inputs {
		pl.integrity.mounts = append(pl.integrity.mounts, sandbox.Mount{Kind: sandbox.Bind, Source: vi.Path, Target: vi.Target, ReadOnly: true})
	}
	return nil
}

// pinInputs checks each of the profile's inputs as the job's user (its
// path, kind and target) and returns what to verify it against.
func (pl *plan) pinInputs() ([]pin.Pin, error) {
	var pins []pin.Pin
	targets := map[string]string{}
	for i, in := range pl.prof.Inputs {
		what := fmt.Sprintf("inputs[%d] %s", i, in.Path)
		if in.Name != "" {
			what = fmt.Sprintf("input %s (%s)", in.Name, in.Path)
		}
		real, dir, err := pl.resolveInput(in)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		target := inputTarget(in, real)
		if err := pl.checkTarget(target, targets); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		targets[target] = what
		vi := verifiedInput{Name: in.Name, Kind: in.Kind, Path: real, Target: target, Dir: dir}
		if vi.Name == "" {
			vi.Name = filepath.Base(real)
		}
		// The user must be able to read what they pin: root hashes it, and
		// a digest (or a manifest parse error) must never tell the user
		// about a file they cannot read themselves.
		var pp pin.Pin
		if in.Signature != nil {
			pp, err = pl.signedPin(in, &vi)
		} else {
			pp, err = pl.digestPin(in, &vi)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		pins = append(pins, pp)
		pl.integrity.inputs = append(pl.integrity.inputs, vi)
	}
	return pins, nil
}

// asUser runs fn as the job's user.
func (pl *plan) asUser(fn func() error) error {
	return asUser(int(pl.user.UID), int(pl.user.GID), pl.req.Caller.Groups, fn)
}

// resolveInput resolves an input's path as the job's user (root's view must
// not tell the user whether a path they cannot reach exists) and checks its
// kind against how it is pinned.
func (pl *plan) resolveInput(in configs.Input) (real string, dir bool, err error) {
	var fi os.FileInfo
	if err := pl.asUser(func() error {
		var err error
		if real, err = filepath.EvalSymlinks(in.Path); err != nil {
			return err
		}
		fi, err = os.Stat(real)
		return err
	}); err != nil {
		return "", false, unwrapFS(err)
	}
	dir = fi.IsDir()
	switch {
	case !dir && !fi.Mode().IsRegular():
		return "", false, errors.New("not a regular file")
	case in.Signature != nil:
	case dir && in.Manifest == "":
		return "", false, errors.New("is a directory: pin it with manifest: (securetrain pin DIR -o FILE), not sha256:")
	case !dir && in.Manifest != "":
		return "", false, errors.New("is not a directory: pin it with sha256:, not manifest:")
	}
	return real, dir, nil
}

// checkTarget refuses a target that is not absolute, is taken, or would
// hide the code, outputs or home directory.
func (pl *plan) checkTarget(target string, taken map[string]string) error {
	if target == "/" || !path.IsAbs(target) {
		return fmt.Errorf("target %q must be an absolute path other than /", target)
	}
	if prev, ok := taken[target]; ok {
		return fmt.Errorf("target %s is already used by %s; give each input its own target", target, prev)
	}
	if target == pl.codeDir || target == pl.outputDir || target == pl.user.Home {
		return fmt.Errorf("target %s would hide the code, output or home directory", target)
	}
	return nil
}

// signedPin verifies an input's OMS signature (read as the job's user) and
// returns the pin it vouches for.
func (pl *plan) signedPin(in configs.Input, vi *verifiedInput) (pin.Pin, error) {
	pp, ms, err := signedInput(pl.prof, in, vi.Path, vi.Dir, pl.asUser)
	if err != nil {
		return pin.Pin{}, oneline.Error(err)
	}
	vi.Signature, vi.SHA256 = ms, pp.Digest.String()
	if vi.Dir {
		vi.SHA256 = pin.ManifestDigest(pp.Manifest).String()
	}
	return pp, nil
}

// digestPin is an input pinned by its sha256 (a file) or its manifest (a
// directory), which the job's user must be able to read.
func (pl *plan) digestPin(in configs.Input, vi *verifiedInput) (pin.Pin, error) {
	manifest, err := pl.readManifest(in, vi.Path, vi.Dir)
	if err != nil {
		return pin.Pin{}, fmt.Errorf("%w (the job's user %s must be able to read it)", unwrapFS(err), pl.user.Name)
	}
	pp := pin.Pin{Path: vi.Path, Dir: vi.Dir, Manifest: manifest}
	if vi.Dir {
		vi.SHA256 = pin.ManifestDigest(manifest).String()
		return pp, nil
	}
	d, err := pin.ParseDigest(in.SHA256)
	if err != nil {
		return pin.Pin{}, fmt.Errorf("sha256: %w", err)
	}
	pp.Digest, vi.SHA256 = d, d.String()
	return pp, nil
}

// readManifest opens the input as the job's user and, for a directory,
// reads its manifest (relative to the profile's directory).
func (pl *plan) readManifest(in configs.Input, real string, dir bool) (manifest []pin.Entry, err error) {
	err = pl.asUser(func() error {
		fd, err := unix.Open(real, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err != nil {
			return err
		}
		unix.Close(fd)
		if !dir {
			return nil
		}
		mf := in.Manifest
		if !filepath.IsAbs(mf) {
			base, err := profileDir(pl.prof)
			if err != nil {
				return err
			}
			mf = filepath.Join(base, mf)
		}
		b, err := readSmallFile(mf, 256<<20)
		if err != nil {
			return fmt.Errorf("manifest %s: %w", mf, unwrapFS(err))
		}
		manifest, err = pin.ParseManifest(bytes.NewReader(b))
		if err != nil {
			return fmt.Errorf("manifest %s: %w", mf, err)
		}
		return nil
	})
	return manifest, err
}

// verifyInputs verifies every pin (with the host's verification cache).
func (l *Launcher) verifyInputs(ctx context.Context, pl *plan, pins []pin.Pin) error {
	opts := pin.Options{Logger: l.Log}
	// The cache is root's: under data_dir (0711, as the job data), 0700.
	if err := os.MkdirAll(l.Host.DataDir, 0o711); err != nil {
		l.Log.Warn("data_dir", "err", err)
	}
	if c, err := pin.OpenCache(l.PinCacheDir()); err != nil {
		// Verifying without the cache is slower, never weaker.
		l.Log.Warn("input verification cache unusable; hashing every file", "err", err)
	} else {
		opts.Cache = c
	}
	res, err := pin.New(opts).VerifyAll(ctx, pins)
	if err != nil {
		return oneline.Error(err)
	}
	pl.integrity.snapshot, pl.integrity.stats = res.Snapshot, res.Stats
	pl.integrity.hideIgnored()
	l.Log.Debug("inputs verified", "files", res.Stats.Files, "hashed", res.Stats.Hashed,
		"cached", res.Stats.Cached, "bytes", res.Stats.Bytes, "hashed_bytes", res.Stats.HashedBytes)
	return nil
}

// checkModel scans a model input (a file, or every file of a directory) and
// refuses dangerous, malformed and unsupported files the profile does not
// accept by digest.
func checkModel(ctx context.Context, vi verifiedInput, p pin.Pin, accept []string) error {
	ok := func(d string) bool {
		for _, a := range accept {
			if strings.EqualFold(strings.TrimPrefix(a, "sha256:"), d) {
				return true
			}
		}
		return false
	}
	if !vi.Dir {
		r, err := scan.Scan(vi.Path)
		if err != nil {
			return fmt.Errorf("model input %s: scan: %w", vi.Path, err)
		}
		return scan.Check(r, vi.SHA256, ok)
	}
	reports, err := scan.ScanTree(ctx, vi.Path)
	if err != nil {
		return fmt.Errorf("model input %s: scan: %w", vi.Path, err)
	}
	digests := map[string]string{}
	for _, e := range p.Manifest {
		digests[filepath.Join(vi.Path, filepath.FromSlash(e.Path))] = e.Digest.String()
	}
	for _, r := range reports {
		if rel, err := filepath.Rel(vi.Path, r.Path); err == nil && pin.Ignored(p.Ignore, filepath.ToSlash(rel)) {
			continue // not verified and hidden from the job
		}
		if err := scan.Check(r, digests[r.Path], ok); err != nil {
			return err
		}
	}
	return nil
}

// recheckInputs runs after the inputs are staged (stage bound what it
// opened onto root-owned points, and the sandbox mounts those) and before
// the job starts. The staging points are checked, not the paths: an input
// swapped (renamed over, rename-exchanged) between verification and staging
// is refused here, one swapped after it is not what the job sees, and a
// file changed in place is caught here or by the end-of-run recheck.
func (j *job) recheckInputs(ctx context.Context) error {
	snap := j.pl.integrity.mounted(j.staged)
	if snap == nil {
		return nil
	}
	if err := pin.Recheck(ctx, snap); err != nil {
		return fmt.Errorf("inputs changed after verification: %w", oneline.Error(unstage(err, j.staged)))
	}
	return nil
}

// mounted is the snapshot of the verified inputs rooted where the sandbox
// mounts them from: their staging points where stage made them.
func (ip *integrityPlan) mounted(staged staging) *pin.Snapshot {
	if ip.snapshot == nil {
		return nil
	}
	s := &pin.Snapshot{}
	for _, p := range ip.snapshot.Pins {
		if point, ok := staged[p.Root]; ok {
			p.Root = point
		}
		s.Pins = append(s.Pins, p)
	}
	return s
}

// unstage names the inputs' own paths, not their staging points, in a
// recheck's changes.
func unstage(err error, staged staging) error {
	var ce *pin.ChangedError
	if !errors.As(err, &ce) {
		return err
	}
	out := &pin.ChangedError{}
	for _, c := range ce.Changes {
		for src, point := range staged {
			if c.Path == point || strings.HasPrefix(c.Path, point+"/") {
				c.Path = src + strings.TrimPrefix(c.Path, point)
				break
			}
		}
		out.Changes = append(out.Changes, c)
	}
	return out
}

// profileDir is the directory a profile file was loaded from; relative
// manifest paths are resolved there.
func profileDir(p *configs.Profile) (string, error) {
	if p.Source == "" || strings.HasPrefix(p.Source, "builtin:") {
		return "", errors.New("a relative manifest path needs a profile loaded from a file: give an absolute path")
	}
	abs, err := filepath.Abs(p.Source)
	if err != nil {
		return "", err
	}
	return filepath.Dir(abs), nil
}

// readSmallFile reads a regular file (no FIFO, no device) up to limit bytes.
func readSmallFile(p string, limit int64) ([]byte, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes", limit)
	}
	return b, nil
}

// finishInputs rechecks inputs at the end of the run (a change fails the
// run: violation kind input, exit 123) and writes the signed provenance of
// the run next to its result record.
func (j *job) finishInputs(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	recheck := j.recheckAtEnd(ctx)
	codeChanges := j.codeChanges(ctx)
	if j.pl.integrity.omsSigner != nil {
		if err := j.signOutputs(ctx); err != nil {
			return fmt.Errorf("outputs signature: %w", err)
		}
	}
	if j.pl.integrity.signer == nil {
		return nil
	}
	p, err := j.attest(ctx, recheck, codeChanges)
	if err != nil {
		return fmt.Errorf("provenance: %w", err)
	}
	j.res.Attestation = p
	return nil
}

// recheckAtEnd rechecks what the job saw: the staged inputs (a path swapped
// and swapped back meanwhile is not what it read). A change is a recorded
// violation that fails the run and its provenance; the job has already
// ended, so there is nothing left to kill.
func (j *job) recheckAtEnd(ctx context.Context) error {
	snap := j.pl.integrity.mounted(j.staged)
	if snap == nil {
		return nil
	}
	res := j.res
	recheck := unstage(pin.Recheck(ctx, snap), j.staged)
	var ce *pin.ChangedError
	if !errors.As(recheck, &ce) {
		if recheck != nil {
			j.log.Warn("input recheck", "err", recheck)
		}
		return recheck
	}
	v := ce.Violation(res.ID)
	v.Action = violation.Recorded
	res.Violations = append(res.Violations, v)
	if res.Usage != nil {
		res.Usage.Violations = res.Violations
		res.Summary = res.Usage.Summary()
	}
	if res.Outcome != OutcomeViolation && res.Outcome != OutcomeLimit {
		res.Outcome, res.ExitCode, res.Reason = OutcomeViolation, ExitPolicy, v.String()
	}
	j.log.Warn("input changed during the run", "err", recheck)
	return recheck
}

// codeChanges lists what changed on the host in an attested job's code
// directory during the run (the job ran the snapshot taken at its start).
func (j *job) codeChanges(ctx context.Context) []string {
	if j.code == nil {
		return nil
	}
	ch, err := j.code.Recheck(ctx, j.pl.codeDir)
	if err != nil {
		ch = []string{"recheck failed: " + err.Error()}
	}
	if len(ch) > 0 {
		j.log.Warn("the code directory changed on the host during the run; the job ran the snapshot taken at its start",
			"changes", strings.Join(ch, ", "))
	}
	return ch
}

// snapshotCode copies the code directory of an attested job, before it
// starts, into a directory of the job's data that only root can reach, and
// points the code mount at the copy: the job runs exactly the content the
// attestation digests, whatever happens to the host's tree during the run
// (a live bind mount shows the job a change made on the host mid-run).
// The copy is read from the directory stage opened. Left out: .git (the
// commit and dirty state are read from it on the host), the credential
// names the live mount masks, and whatever another mount covers (the
// outputs directory, an environment inside the code directory), for which
// an empty mount point stands. It is bounded by integrity.code_snapshot_max.
func (j *job) snapshotCode(ctx context.Context) error {
	pl := j.pl
	if pl.integrity.signer == nil {
		return nil
	}
	t0 := time.Now()
	from := pl.codeDir
	if point, ok := j.staged[pl.codeDir]; ok {
		from = point
	}
	var exclude []string
	for _, name := range append(append([]string(nil), CredentialNames...), pl.prof.Sandbox.Mask...) {
		exclude = append(exclude, filepath.Clean(name))
	}
	points := map[string]bool{} // mount points under the code directory: rel -> directory
	targets := append(append(append([]sandbox.Mount(nil), pl.mounts...), pl.integrity.mounts...), j.secrets...)
	targets = append(targets, sandbox.Mount{Kind: sandbox.Bind, Source: pl.outputDir, Target: pl.outputDir})
	for _, m := range targets {
		rel, ok := strings.CutPrefix(m.Target, pl.codeDir+"/")
		if !ok {
			continue
		}
		exclude = append(exclude, rel)
		dir := m.Kind != sandbox.Bind
		if !dir {
			fi, err := os.Stat(m.Source)
			dir = err != nil || fi.IsDir()
		}
		points[rel] = dir
	}
	base := filepath.Join(j.l.JobData(j.id), "snapshot")
	if err := j.l.record(j.h, &j.undo, jobstate.Resource{Kind: KindDir, Name: base}); err != nil {
		return err
	}
	if err := os.Mkdir(base, 0o700); err != nil {
		return err
	}
	copyDir := filepath.Join(base, "code")
	snap, err := provenance.SnapshotCode(ctx, pl.codeDir, from, copyDir,
		provenance.SnapshotOptions{Exclude: exclude, MaxBytes: int64(j.l.Host.Integrity.CodeSnapshotMax)})
	if err != nil {
		return fmt.Errorf("code snapshot: %w", err)
	}
	for rel, dir := range points {
		p := filepath.Join(copyDir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("code snapshot: mount point %s: %w", rel, err)
		}
		if dir {
			err = os.Mkdir(p, 0o755)
		} else {
			err = os.WriteFile(p, nil, 0o444)
		}
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("code snapshot: mount point %s: %w", rel, err)
		}
	}
	if j.staged == nil {
		j.staged = staging{}
	}
	j.staged[pl.codeDir] = copyDir
	j.code = snap // the bundle masks no credentials: they were never copied
	j.log.Debug("code snapshot", "files", snap.State.Files, "bytes", snap.Bytes, "took", time.Since(t0),
		"tree_sha256", snap.State.TreeSHA256)
	return nil
}
