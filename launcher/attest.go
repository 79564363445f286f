package launcher

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/provenance"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/signing"
)

// AttestationName is the file, in the job's data directory, that holds the
// DSSE envelope of the run's provenance.
const AttestationName = "attestation.dsse.json"

// provenanceSigner returns the signer for this job's provenance: the host's
// ed25519 key file, or its Vault transit key. A job runs with provenance
// when the host signs (every job is attested) or the profile asks for it;
// a profile that asks on a host that cannot sign is refused, and so is a
// signer that cannot be loaded (fail closed: no unattested job).
func (l *Launcher) provenanceSigner(ctx context.Context, p *configs.Profile) (signing.Signer, error) {
	h := l.Host.Integrity
	switch {
	case h.SigningKey != "":
		s, err := signing.LoadPrivateKeyFile(h.SigningKey)
		if err != nil {
			return nil, fmt.Errorf("host integrity.signing_key: %w", err)
		}
		return s, nil
	case h.TransitKey != "":
		c, err := l.vaultClient()
		if err != nil {
			return nil, fmt.Errorf("host integrity.transit_key %s: %w", h.TransitKey, err)
		}
		s, err := signing.NewTransitSigner(ctx, c, h.TransitMount, h.TransitKey, 0)
		if err != nil {
			return nil, fmt.Errorf("host integrity.transit_key %s: %w", h.TransitKey, err)
		}
		return s, nil
	case p.Integrity.Provenance:
		src := l.Host.Source
		if src == "" {
			src = configs.DefaultHostConfig
		}
		return nil, fmt.Errorf("profile %s asks for provenance (integrity.provenance: true) but this host signs nothing: set integrity.signing_key or integrity.transit_key in %s", p.Name, src)
	}
	return nil, nil
}

// vaultClient is the launcher's own Vault client for transit signing:
// the host's vault.address (else VAULT_ADDR), and VAULT_TOKEN or the
// host's vault.auth.token_file.
func (l *Launcher) vaultClient() (*vault.Client, error) {
	hv := l.Host.Vault
	cfg := vault.DefaultConfig()
	if cfg.Error != nil {
		return nil, cfg.Error
	}
	if hv.Address != "" {
		cfg.Address = hv.Address
	}
	if hv.CACert != "" || hv.ClientCert != "" {
		if err := cfg.ConfigureTLS(&vault.TLSConfig{CACert: hv.CACert, ClientCert: hv.ClientCert, ClientKey: hv.ClientKey}); err != nil {
			return nil, err
		}
	}
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	if hv.Namespace != "" {
		c.SetNamespace(hv.Namespace)
	}
	if c.Token() == "" && hv.Auth.TokenFile != "" {
		b, err := readSmallFile(hv.Auth.TokenFile, 64<<10)
		if err != nil {
			return nil, fmt.Errorf("vault.auth.token_file %s: %w", hv.Auth.TokenFile, unwrapFS(err))
		}
		c.SetToken(strings.TrimSpace(string(b)))
	}
	if c.Token() == "" {
		return nil, errors.New("no Vault token for transit signing: set VAULT_TOKEN or vault.auth.token_file")
	}
	return c, nil
}

// sitePackages lists the Python package directories visible to the job's
// interpreter: those of the detected environment (venv, conda, pyenv) and
// of the root file system the job sees. Only their metadata files are read.
func (l *Launcher) sitePackages(pl *plan) []string {
	python := pl.req.Python
	if python == "" {
		python = pl.prof.Sandbox.Python
	}
	if python != "" {
		if abs, err := filepath.Abs(python); err == nil {
			python = abs
		}
	}
	py := detectPython(python, pl.req.Command, pl.codeDir, envMap(pl.req.CallerEnv))
	roots := append([]string(nil), py.Prefixes...)
	for _, b := range py.Bins {
		roots = append(roots, filepath.Dir(b))
	}
	if pl.rootfs == "" {
		roots = append(roots, "/")
	} else {
		roots = append(roots, pl.rootfs)
	}
	var out []string
	seen := map[string]bool{}
	for _, r := range roots {
		for _, d := range provenance.SitePackagesUnder(r) {
			real, err := filepath.EvalSymlinks(d)
			if err != nil || seen[real] {
				continue
			}
			seen[real] = true
			out = append(out, d)
		}
	}
	return out
}

// attest builds, signs and writes the provenance of a finished job and
// returns the envelope's path.
func (j *job) attest(ctx context.Context, recheck error, codeChanges []string) (string, error) {
	l, pl, res := j.l, j.pl, j.res
	host, _ := os.Hostname()
	version := map[string]string{"gvisor": PinnedGVisor}
	if bi, ok := debug.ReadBuildInfo(); ok {
		version["securetrain"] = bi.Main.Version
	}
	run := provenance.Run{
		JobID:            res.ID,
		BuilderID:        "https://securetrain.dev/launcher@" + host,
		Version:          version,
		Command:          res.Command,
		Profile:          provenance.ProfileRef{Name: pl.prof.Name, Path: pl.prof.Source, SHA256: pl.prof.Digest},
		CodeDir:          pl.codeDir,
		SitePackages:     pl.integrity.sitePkgs,
		Violations:       res.Violations,
		InputsRecheck:    recheck,
		OutputsDir:       pl.outputDir,
		OutputsSignature: j.outputsSig,
		ExitCode:         res.ExitCode,
		StartedOn:        time.Now(),
		FinishedOn:       time.Now(),
	}
	if c := j.code; c != nil {
		run.Code, run.CodeChanges = &c.State, codeChanges
	}
	for _, in := range pl.integrity.inputs {
		pi := provenance.Input{Name: in.Name, Path: in.Path, Dir: in.Dir, SHA256: in.SHA256}
		if s := in.Signature; s != nil {
			pi.Signature = &provenance.ModelSignature{Bundle: s.Bundle, BundleSHA256: s.BundleSHA256, Method: s.Method, Signer: s.Signer, RootDigest: s.RootDigest}
		}
		run.Inputs = append(run.Inputs, pi)
	}
	if v, err := l.runsc().Version(ctx); err == nil {
		run.RunscVersion = v
	} else {
		run.RunscVersion = "unknown (" + err.Error() + ")"
	}
	if len(pl.gpus) > 0 {
		if d, err := (sandbox.GPUHost{}).DriverVersion(); err == nil {
			run.GPUDriver = d
		}
	}
	dests := map[string]bool{}
	if res.Usage != nil {
		if !res.Usage.Start.IsZero() {
			run.StartedOn, run.FinishedOn = res.Usage.Start, res.Usage.End
		}
		for d := range res.Usage.EgressBytes {
			dests[d] = true
		}
		b, err := json.Marshal(res.Usage)
		if err != nil {
			return "", err
		}
		run.Usage = b
	}
	for _, d := range res.Suggested {
		dests[d] = true
	}
	for d := range dests {
		run.Destinations = append(run.Destinations, d)
	}
	sort.Strings(run.Destinations)
	st, err := provenance.Build(ctx, run)
	if err != nil {
		return "", err
	}
	env, err := provenance.Sign(ctx, st, pl.integrity.signer)
	if err != nil {
		return "", err
	}
	p := filepath.Join(l.JobData(res.ID), AttestationName)
	if err := writeOwned(p, env, int(pl.user.UID), int(pl.user.GID)); err != nil {
		return "", err
	}
	return p, nil
}
