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
	snapshot *pin.Snapshot            // stat state of every input as verified
	staged   *pin.Snapshot            // the same, rooted at the inputs' staging mounts (what the job sees)
	code     *provenance.CodeSnapshot // the code the job runs, taken before it starts (attested jobs)
	stats    pin.Stats                // what verification cost
	signer   signing.Signer           // nil: no provenance for this job
	sitePkgs []string                 // Python package directories visible to the job
	// omsSigner signs the outputs as an OMS bundle (integrity.sign_outputs).
	omsSigner  oms.Signer
	outputsSig *provenance.ModelSignature // the bundle it made
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
	uid, gid, groups := int(pl.user.UID), int(pl.user.GID), pl.req.Caller.Groups
	var pins []pin.Pin
	targets := map[string]string{}
	for i, in := range p.Inputs {
		what := fmt.Sprintf("inputs[%d] %s", i, in.Path)
		if in.Name != "" {
			what = fmt.Sprintf("input %s (%s)", in.Name, in.Path)
		}
		// Resolved as the job's user: root's view must not tell the user
		// whether a path they cannot reach exists.
		var real string
		var fi os.FileInfo
		if err := asUser(uid, gid, groups, func() error {
			var err error
			if real, err = filepath.EvalSymlinks(in.Path); err != nil {
				return err
			}
			fi, err = os.Stat(real)
			return err
		}); err != nil {
			return fmt.Errorf("%s: %w", what, unwrapFS(err))
		}
		dir := fi.IsDir()
		switch {
		case !dir && !fi.Mode().IsRegular():
			return fmt.Errorf("%s: not a regular file", what)
		case in.Signature != nil:
		case dir && in.Manifest == "":
			return fmt.Errorf("%s: is a directory: pin it with manifest: (securetrain pin DIR -o FILE), not sha256:", what)
		case !dir && in.Manifest != "":
			return fmt.Errorf("%s: is not a directory: pin it with sha256:, not manifest:", what)
		}
		target := inputTarget(in, real)
		if target == "/" || !path.IsAbs(target) {
			return fmt.Errorf("%s: target %q must be an absolute path other than /", what, target)
		}
		if prev, ok := targets[target]; ok {
			return fmt.Errorf("%s: target %s is already used by %s; give each input its own target", what, target, prev)
		}
		if target == pl.codeDir || target == pl.outputDir || target == pl.user.Home {
			return fmt.Errorf("%s: target %s would hide the code, output or home directory", what, target)
		}
		targets[target] = what
		// The user must be able to read what they pin: root hashes it, and
		// a digest (or a manifest parse error) must never tell the user
		// about a file they cannot read themselves.
		if in.Signature != nil {
			readAs := func(fn func() error) error { return asUser(uid, gid, groups, fn) }
			pp, ms, err := signedInput(p, in, real, dir, readAs)
			if err != nil {
				return fmt.Errorf("%s: %w", what, oneline.Error(err))
			}
			vi := verifiedInput{Name: in.Name, Kind: in.Kind, Path: real, Target: target, Dir: dir, Signature: ms, SHA256: pp.Digest.String()}
			if dir {
				vi.SHA256 = pin.ManifestDigest(pp.Manifest).String()
			}
			if vi.Name == "" {
				vi.Name = filepath.Base(real)
			}
			pins = append(pins, pp)
			pl.integrity.inputs = append(pl.integrity.inputs, vi)
			continue
		}
		var manifest []pin.Entry
		if err := asUser(uid, gid, groups, func() error {
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
				base, err := profileDir(p)
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
		}); err != nil {
			return fmt.Errorf("%s: %w (the job's user %s must be able to read it)", what, unwrapFS(err), pl.user.Name)
		}
		pp := pin.Pin{Path: real, Dir: dir, Manifest: manifest}
		vi := verifiedInput{Name: in.Name, Kind: in.Kind, Path: real, Target: target, Dir: dir}
		if vi.Name == "" {
			vi.Name = filepath.Base(real)
		}
		if dir {
			vi.SHA256 = pin.ManifestDigest(manifest).String()
		} else {
			d, err := pin.ParseDigest(in.SHA256)
			if err != nil {
				return fmt.Errorf("%s: sha256: %w", what, err)
			}
			pp.Digest, vi.SHA256 = d, d.String()
		}
		pins = append(pins, pp)
		pl.integrity.inputs = append(pl.integrity.inputs, vi)
	}

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

// recheckMountedInputs runs after the inputs are staged (stage bound what
// it opened onto root-owned points, and the sandbox mounts those) and
// before the job starts. The staging points are checked, not the paths: an
// input swapped (renamed over, rename-exchanged) between verification and
// staging is refused here, one swapped after it is not what the job sees,
// and a file changed in place is caught here or by the end-of-run recheck.
func (l *Launcher) recheckMountedInputs(ctx context.Context, pl *plan) error {
	snap := pl.integrity.mounted(pl.req.staged)
	if snap == nil {
		return nil
	}
	if err := pin.Recheck(ctx, snap); err != nil {
		return fmt.Errorf("inputs changed after verification: %w", oneline.Error(unstage(err, pl.req.staged)))
	}
	return nil
}

// mounted is the snapshot of the verified inputs rooted where the sandbox
// mounts them from: their staging points where stage made them.
func (ip *integrityPlan) mounted(staged map[string]string) *pin.Snapshot {
	if ip.snapshot == nil {
		return nil
	}
	if ip.staged == nil {
		s := &pin.Snapshot{}
		for _, p := range ip.snapshot.Pins {
			if point, ok := staged[p.Root]; ok {
				p.Root = point
			}
			s.Pins = append(s.Pins, p)
		}
		ip.staged = s
	}
	return ip.staged
}

// unstage names the inputs' own paths, not their staging points, in a
// recheck's changes.
func unstage(err error, staged map[string]string) error {
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
func (l *Launcher) finishInputs(ctx context.Context, pl *plan, res *Result) error {
	ctx = context.WithoutCancel(ctx)
	var recheck error
	if snap := pl.integrity.mounted(pl.req.staged); snap != nil {
		// What the job saw: the staged inputs (a path swapped and swapped
		// back meanwhile is not what it read).
		recheck = unstage(pin.Recheck(ctx, snap), pl.req.staged)
		var ce *pin.ChangedError
		if errors.As(recheck, &ce) {
			v := ce.Violation(res.ID)
			// The job has already ended: the violation fails the run
			// and its provenance; there is nothing left to kill.
			v.Action = violation.Recorded
			res.Violations = append(res.Violations, v)
			if res.Usage != nil {
				res.Usage.Violations = res.Violations
				res.Summary = res.Usage.Summary()
			}
			if res.Outcome != OutcomeViolation && res.Outcome != OutcomeLimit {
				res.Outcome, res.ExitCode, res.Reason = OutcomeViolation, ExitPolicy, v.String()
			}
			l.Log.Warn("input changed during the run", "job", res.ID, "err", recheck)
		} else if recheck != nil {
			l.Log.Warn("input recheck", "job", res.ID, "err", recheck)
		}
	}
	var codeChanges []string
	if pl.integrity.code != nil {
		ch, err := pl.integrity.code.Recheck(ctx, pl.codeDir)
		if err != nil {
			ch = []string{"recheck failed: " + err.Error()}
		}
		if len(ch) > 0 {
			codeChanges = ch
			l.Log.Warn("the code directory changed on the host during the run; the job ran the snapshot taken at its start",
				"job", res.ID, "changes", strings.Join(ch, ", "))
		}
	}
	if pl.integrity.omsSigner != nil {
		if err := l.signOutputs(ctx, pl, res); err != nil {
			return fmt.Errorf("outputs signature: %w", err)
		}
	}
	if pl.integrity.signer == nil {
		return nil
	}
	p, err := l.attest(ctx, pl, res, recheck, codeChanges)
	if err != nil {
		return fmt.Errorf("provenance: %w", err)
	}
	res.Attestation = p
	return nil
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
func (l *Launcher) snapshotCode(ctx context.Context, pl *plan, h *Handle, undo *cleanup, jobData string, extra []sandbox.Mount) error {
	if pl.integrity.signer == nil {
		return nil
	}
	t0 := time.Now()
	from := pl.codeDir
	if point, ok := pl.req.staged[pl.codeDir]; ok {
		from = point
	}
	var exclude []string
	for _, name := range append(append([]string(nil), CredentialNames...), pl.prof.Sandbox.Mask...) {
		exclude = append(exclude, filepath.Clean(name))
	}
	points := map[string]bool{} // mount points under the code directory: rel -> directory
	targets := append(append(append([]sandbox.Mount(nil), pl.mounts...), pl.integrity.mounts...), extra...)
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
	base := filepath.Join(jobData, "snapshot")
	if err := l.record(h, undo, jobstate.Resource{Kind: KindDir, Name: base}); err != nil {
		return err
	}
	if err := os.Mkdir(base, 0o700); err != nil {
		return err
	}
	copyDir := filepath.Join(base, "code")
	snap, err := provenance.SnapshotCode(ctx, pl.codeDir, from, copyDir,
		provenance.SnapshotOptions{Exclude: exclude, MaxBytes: int64(l.Host.Integrity.CodeSnapshotMax)})
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
	if pl.req.staged == nil {
		pl.req.staged = map[string]string{}
	}
	pl.req.staged[pl.codeDir] = copyDir
	pl.masks = nil // the credentials were never copied
	pl.integrity.code = snap
	l.Log.Debug("code snapshot", "files", snap.State.Files, "bytes", snap.Bytes, "took", time.Since(t0),
		"tree_sha256", snap.State.TreeSHA256)
	return nil
}
