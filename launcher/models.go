package launcher

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/oms"
	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/provenance"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/signing"
)

// modelSignature is what a verified OMS signature of a model input says;
// it goes into the audit log and the provenance.
type modelSignature struct {
	Bundle       string // resolved host path of the bundle
	BundleSHA256 string
	Method       string // key or certificate
	Signer       string
	RootDigest   string
	hidden       []hiddenPath // ignored paths present in the model: hidden from the job
}

// hiddenPath is an ignored path of a signed model, inside the sandbox.
type hiddenPath struct {
	target string
	dir    bool
}

// signedInput verifies an input's OMS signature against the profile's trust
// and returns the pin that checks the model's files (hashed with the other
// pins). Bundle and trust files are read as the job's user, like manifests.
// It reads nothing of the model itself: the pin does, opening every file
// beneath the model directory.
func signedInput(p *configs.Profile, in configs.Input, real string, dir bool, readAs func(func() error) error) (pin.Pin, *modelSignature, error) {
	sg := in.Signature
	resolve := func(f string) (string, error) {
		if filepath.IsAbs(f) {
			return f, nil
		}
		base, err := profileDir(p)
		if err != nil {
			return "", err
		}
		return filepath.Join(base, f), nil
	}
	var bundle, realBundle string
	var b []byte
	var trust oms.Trust
	err := readAs(func() error {
		var err error
		if bundle, err = resolve(sg.Bundle); err != nil {
			return err
		}
		if realBundle, err = filepath.EvalSymlinks(bundle); err != nil {
			return fmt.Errorf("signature %s: %w", bundle, unwrapFS(err))
		}
		if b, err = readSmallFile(realBundle, 256<<20); err != nil {
			return fmt.Errorf("signature %s: %w", bundle, unwrapFS(err))
		}
		if trust, err = loadTrust(sg, resolve); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		return pin.Pin{}, nil, err
	}
	v, err := oms.Verify(b, trust)
	if err != nil {
		return pin.Pin{}, nil, fmt.Errorf("signature %s: %w", bundle, err)
	}
	pp, err := v.Pin(real, dir, realBundle, sg.AllowIgnored)
	if err != nil {
		return pin.Pin{}, nil, fmt.Errorf("signature %s: %w", bundle, err)
	}
	ms := &modelSignature{Bundle: realBundle, BundleSHA256: pin.Digest(sha256.Sum256(b)).String(), Method: v.Method, Signer: v.Signer, RootDigest: v.RootDigest}
	return pp, ms, nil
}

// hideIgnored records, for each signed model, the ignored paths that
// verification found (the snapshot's, so what is hidden is what was seen;
// one that appears later fails the rechecks).
func (ip *integrityPlan) hideIgnored() {
	for i := range ip.inputs {
		vi := &ip.inputs[i]
		if vi.Signature == nil || !vi.Dir || ip.snapshot == nil {
			continue
		}
		for _, sp := range ip.snapshot.Pins {
			if sp.Root != vi.Path {
				continue
			}
			for _, p := range slices.Sorted(maps.Keys(sp.Ignored)) {
				// A symlink resolves inside the sandbox: nothing of its own to hide.
				if k := sp.Ignored[p]; k == "dir" || k == "file" {
					vi.Signature.hidden = append(vi.Signature.hidden, hiddenPath{target: path.Join(vi.Target, p), dir: k == "dir"})
				}
			}
		}
	}
}

// loadTrust reads the key, or the CA certificates and identity, an input's
// signature must verify with.
func loadTrust(sg *configs.InputSignature, resolve func(string) (string, error)) (oms.Trust, error) {
	var t oms.Trust
	switch {
	case sg.Key != "":
		f, err := resolve(sg.Key)
		if err != nil {
			return t, err
		}
		b, err := readSmallFile(f, 64<<10)
		if err != nil {
			return t, fmt.Errorf("signature.key %s: %w", f, unwrapFS(err))
		}
		if t.Key, err = oms.ParsePublicKey(b); err != nil {
			return t, fmt.Errorf("signature.key %s: %w", f, err)
		}
	case sg.CA != "":
		f, err := resolve(sg.CA)
		if err != nil {
			return t, err
		}
		b, err := readSmallFile(f, 1<<20)
		if err != nil {
			return t, fmt.Errorf("signature.ca %s: %w", f, unwrapFS(err))
		}
		certs, err := oms.ParseCertificates(b)
		if err != nil {
			return t, fmt.Errorf("signature.ca %s: %w", f, err)
		}
		t.Roots = x509.NewCertPool()
		for _, c := range certs {
			t.Roots.AddCert(c)
		}
		t.Identities = []string{sg.Identity}
	default:
		return t, fmt.Errorf("signature: no trust (key or ca)")
	}
	return t, nil
}

// hideMounts covers the ignored paths of signed models: the job sees only
// what was verified. empty is an empty read-only file.
func (ip *integrityPlan) hideMounts(empty string) []sandbox.Mount {
	var out []sandbox.Mount
	for _, vi := range ip.inputs {
		if vi.Signature == nil {
			continue
		}
		for _, h := range vi.Signature.hidden {
			if h.dir {
				out = append(out, sandbox.Mount{Kind: sandbox.Tmpfs, Target: h.target, ReadOnly: true, Size: 4096, Mode: 0o500})
			} else {
				out = append(out, sandbox.Mount{Kind: sandbox.Bind, Source: empty, Target: h.target, ReadOnly: true})
			}
		}
	}
	return out
}

// OutputsSignatureName is the file, in the job's data directory, that holds
// the OMS bundle of the job's outputs.
const OutputsSignatureName = "outputs.sig"

// outputsSigner returns the signer of the outputs' OMS bundle when the
// profile asks for one: the host's integrity.oms_key (with its certificate
// chain, if any), else its provenance signer. A profile that asks on a host
// that cannot sign is refused.
func (l *Launcher) outputsSigner(p *configs.Profile, prov signing.Signer) (oms.Signer, error) {
	if !p.Integrity.SignOutputs {
		return nil, nil
	}
	h := l.Host.Integrity
	switch {
	case h.OMSKey != "":
		s, err := oms.LoadSigner(h.OMSKey, h.OMSCertificate)
		if err != nil {
			return nil, fmt.Errorf("host integrity.oms_key: %w", err)
		}
		return s, nil
	case prov != nil:
		return oms.FromSigning(prov), nil
	}
	src := l.Host.Source
	if src == "" {
		src = configs.DefaultHostConfig
	}
	return nil, fmt.Errorf("profile %s asks to sign its outputs (integrity.sign_outputs: true) but this host signs nothing: set integrity.oms_key, signing_key or transit_key in %s", p.Name, src)
}

// signOutputs, after a run that exited 0 without violations, hashes the
// outputs directory (regular files only, never
// following a symlink: see provenance.HashOutputs) and writes its OMS
// bundle to the job's data directory, owned by the job's user.
func (j *job) signOutputs(ctx context.Context) error {
	l, pl, res := j.l, j.pl, j.res
	if res.ExitCode != 0 || len(res.Violations) > 0 {
		// Outputs of a failed or violating run (an input changed, a
		// destination refused, a limit hit) are not vouched for.
		l.Log.Warn("outputs not signed: the run did not succeed", "job", res.ID, "exit", res.ExitCode, "violations", len(res.Violations))
		return nil
	}
	es, skipped, err := provenance.HashOutputs(ctx, pl.outputDir)
	if err != nil {
		return err
	}
	for _, s := range skipped {
		l.Log.Warn("output not signed", "job", res.ID, "path", s.Path, "why", s.Why)
	}
	if len(es) == 0 {
		l.Log.Warn("no output files: nothing to sign", "job", res.ID)
		return nil
	}
	st, err := oms.NewStatement(filepath.Base(pl.outputDir), es, nil)
	if err != nil {
		return err
	}
	b, err := oms.Sign(ctx, st, pl.integrity.omsSigner)
	if err != nil {
		return err
	}
	method, signer := "key", ""
	if ch := pl.integrity.omsSigner.Chain(); len(ch) > 0 {
		method, signer = "certificate", ch[0].Subject.String()
	} else if h, err := oms.KeyHint(pl.integrity.omsSigner.Public()); err == nil {
		signer = "key sha256:" + h
	}
	p := filepath.Join(l.JobData(res.ID), OutputsSignatureName)
	if err := writeOwned(p, b, int(pl.user.UID), int(pl.user.GID)); err != nil {
		return err
	}
	res.OutputsSignature = p
	j.outputsSig = &provenance.ModelSignature{Bundle: p, BundleSHA256: pin.Digest(sha256.Sum256(b)).String(),
		Method: method, Signer: signer, RootDigest: st.Subject[0].Digest["sha256"]}
	return nil
}

// ModelFlag is a signed model input named on the command line (--model
// PATH[:TARGET] --model-signature FILE with --model-key FILE, or
// --model-ca FILE --model-identity ID). Relative paths are relative to the
// caller's working directory.
type ModelFlag struct {
	Path      string `json:"path"`
	Signature string `json:"signature"`
	Key       string `json:"key,omitempty"`
	CA        string `json:"ca,omitempty"`
	Identity  string `json:"identity,omitempty"`
}

// WithModel returns a copy of p with m as one more model input, checked as
// the profile's own inputs are. dir is the caller's working directory.
func WithModel(p *configs.Profile, m *ModelFlag, dir string) (*configs.Profile, error) {
	if m == nil || (m.Path == "" && m.Signature == "" && m.Key == "" && m.CA == "" && m.Identity == "") {
		return p, nil
	}
	abs := func(f string) string {
		if f == "" || filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(dir, f)
	}
	src, dst, _ := strings.Cut(m.Path, ":")
	switch {
	case src == "":
		return nil, fmt.Errorf("--model-signature, --model-key, --model-ca and --model-identity go with --model PATH[:TARGET]")
	case m.Signature == "":
		return nil, fmt.Errorf("--model %s: needs --model-signature FILE (its OMS signature)", m.Path)
	case (m.Key == "") == (m.CA == ""):
		return nil, fmt.Errorf("--model %s: needs exactly one trust: --model-key FILE, or --model-ca FILE with --model-identity ID", m.Path)
	}
	in := configs.Input{Name: filepath.Base(filepath.Clean(src)), Kind: "model", Path: abs(src), Target: dst,
		Signature: &configs.InputSignature{Bundle: abs(m.Signature), Key: abs(m.Key), CA: abs(m.CA), Identity: m.Identity}}
	q := *p
	q.Inputs = append(append([]configs.Input(nil), p.Inputs...), in)
	if err := q.Validate(); err != nil {
		return nil, fmt.Errorf("--model %s: %w", m.Path, err)
	}
	return &q, nil
}
