package launcher

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/jobstate"
	"github.com/securetrain/securetrain/sandbox"
	"github.com/securetrain/securetrain/secrets"
)

// EntryPoint is where the launcher's own binary is bound inside a sandbox
// whose profile maps secrets to environment variables: it reads the
// delivered files, sets the variables in the job's memory, and execs the
// job. Values thus never appear in the OCI spec (which runsc keeps on disk).
const EntryPoint = "/.securetrain/securetrain"

// ExecEnvVerb is the hidden verb the entry point runs.
const ExecEnvVerb = "exec-env"

// vaultClientConfig is the launcher's own Vault identity: the Vault CLI's
// environment variables, overridden by the host configuration.
func (l *Launcher) vaultClientConfig() secrets.ClientConfig {
	v := l.Host.Vault
	file := secrets.ClientConfig{
		Address: v.Address, CACert: v.CACert, ClientCert: v.ClientCert, ClientKey: v.ClientKey, Namespace: v.Namespace,
		Auth: secrets.Auth{
			Method: v.Auth.Method, TokenFile: v.Auth.TokenFile, RoleID: v.Auth.RoleID,
			SecretIDFile: v.Auth.SecretIDFile, SecretIDWrapped: v.Auth.SecretIDWrapped,
			JWTFile: v.Auth.JWTFile, Role: v.Auth.Role, Mount: v.Auth.Mount,
		},
	}
	return secrets.Merge(secrets.ClientConfigFromEnv(), file)
}

// jobSpec builds the secrets request of a profile; JobID, UID/GID and
// HostDir are filled at setup.
func jobSpec(p *configs.Profile) secrets.JobSpec {
	spec := secrets.JobSpec{
		Policies:       p.Vault.Policies,
		TokenRole:      p.Vault.TokenRole,
		TTL:            p.Vault.TTL.D(),
		MaxTTL:         p.Limits.WallTime.D(),
		OnRenewFailure: p.Vault.OnRenewFailure,
		SandboxDir:     secrets.DefaultSandboxDir,
	}
	for _, s := range p.Secrets {
		spec.Secrets = append(spec.Secrets, secrets.Secret{Path: s.Path, Files: s.Files, Env: s.Env})
	}
	return spec
}

// prepareSecrets checks the profile's secrets and the launcher's Vault
// configuration before anything is created.
func (l *Launcher) prepareSecrets(pl *plan) error {
	if len(pl.prof.Secrets) == 0 {
		return nil
	}
	cc := l.vaultClientConfig()
	if err := cc.Validate(); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	spec := jobSpec(pl.prof)
	spec.JobID, spec.UID, spec.GID = "000000000000", int(pl.user.UID), int(pl.user.GID)
	spec.HostDir = "/run/securetrain/check"
	if err := spec.Validate(); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("secrets: cannot find the securetrain binary for the sandbox entry point: %w", err)
	}
	pl.self = self
	return nil
}

// issueSecrets logs the launcher in, creates the job's orphan token, reads
// and delivers the secrets, and rewrites the job's command to go through the
// entry point. Every step is recorded and undone on failure (fail closed).
func (j *job) issueSecrets(ctx context.Context) error {
	c, err := secrets.NewClient(ctx, j.l.vaultClientConfig(), j.log)
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	j.undo.push(func() error { c.Close(); return nil })
	spec := jobSpec(j.pl.prof)
	spec.JobID, spec.UID, spec.GID = j.id, int(j.pl.user.UID), int(j.pl.user.GID)
	spec.HostDir = filepath.Join(j.h.Dir(), "secrets")
	g, err := c.Issue(ctx, spec, j.h)
	if err != nil {
		return err
	}
	j.grant = g
	j.undo.pushRemoving(g.Records(), func() error {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return g.Revoke(rctx)
	})
	for _, m := range g.Mounts() {
		j.secrets = append(j.secrets, sandbox.Mount{Kind: sandbox.Bind, Source: m.Source, Target: m.Destination, ReadOnly: true})
	}
	j.secrets = append(j.secrets, sandbox.Mount{Kind: sandbox.Bind, Source: j.pl.self, Target: EntryPoint, ReadOnly: true})
	j.args = append([]string{EntryPoint, ExecEnvVerb, g.EnvMapFile(), "--"}, j.pl.args...)
	return nil
}

// vaultGC returns the cleaner for Vault records: job tokens are revoked by
// accessor with the launcher's own identity (the job's token is never
// written down), logged in on first use and kept (gcVaultClient).
func (l *Launcher) vaultGC() func(context.Context, jobstate.Resource) error {
	return func(ctx context.Context, r jobstate.Resource) error {
		if r.Kind == secrets.KindMount {
			return secrets.GC(ctx, nil, r)
		}
		if r.Attrs["accessor"] == "" {
			return nil // recorded before the token existed: nothing to revoke
		}
		c, err := l.gcVaultClient(ctx)
		if err != nil {
			return fmt.Errorf("vault login for gc: %w", err)
		}
		return secrets.GC(ctx, c, r)
	}
}

// gcVaultClient returns the launcher's Vault client for gc. It is kept for
// the launcher's life once logged in: the daemon retries leftovers every
// daemon.gc_interval, and an AppRole secret id delivered wrapped can be
// unwrapped only once; the client renews its token and logs in again by
// itself. A failed login is not kept (Vault may be back at the next pass).
func (l *Launcher) gcVaultClient(ctx context.Context) (*secrets.Client, error) {
	l.gcVault.Lock()
	defer l.gcVault.Unlock()
	if l.gcVault.c != nil {
		return l.gcVault.c, nil
	}
	c, err := secrets.NewClient(context.WithoutCancel(ctx), l.vaultClientConfig(), l.Log)
	if err != nil {
		return nil, err
	}
	l.gcVault.c = c
	return c, nil
}
