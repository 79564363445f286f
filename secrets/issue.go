package secrets

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/securetrain/securetrain/internal/charset"
	"github.com/securetrain/securetrain/jobstate"
)

// Renewal-failure policies (JobSpec.OnRenewFailure).
const (
	OnFailureStop     = "stop"     // the job is stopped (a violation.Secrets event)
	OnFailureContinue = "continue" // the job runs on until its credentials expire
)

// DefaultSandboxDir is where the job sees its secret files.
const DefaultSandboxDir = "/run/secrets"

// metaDir holds, inside the delivery mount, the env map and env-only values.
const metaDir = ".securetrain"

// Resource kinds this package records in the job state.
const (
	KindToken = "vault-token" // Name: job id; Attrs: accessor, role, leases
	KindMount = "secrets-tmpfs"
)

// JobSpec is what one job asks of Vault; the launcher fills it from the
// profile and the job's identity.
type JobSpec struct {
	JobID     string
	Policies  []string // policies of the job token (allowed by the token role)
	TokenRole string   // token role that creates orphan job tokens
	// TTL and MaxTTL of the job token; both required and no longer than the
	// job's wall-time limit (the launcher checks the latter).
	TTL, MaxTTL time.Duration
	Secrets     []Secret
	// OnRenewFailure is stop (default) or continue.
	OnRenewFailure string
	UID, GID       int // the job's user: owner of the delivered files
	// HostDir is the host directory where a private tmpfs is mounted and the
	// files are written; the launcher bind-mounts it read-only at SandboxDir.
	// It must not exist yet, its parent must.
	HostDir    string
	SandboxDir string // default /run/secrets
}

// Secret is one Vault path and where its fields go.
type Secret struct {
	Path  string
	Files map[string]string // field -> absolute path inside the sandbox, under SandboxDir
	Env   map[string]string // environment variable -> field
}

var (
	envRe    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	vpathRe  = regexp.MustCompile(`^[A-Za-z0-9_.@+=-]+(/[A-Za-z0-9_.@+=-]+)*$`)
	policyRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
)

func (s JobSpec) withDefaults() JobSpec {
	if s.SandboxDir == "" {
		s.SandboxDir = DefaultSandboxDir
	}
	if s.OnRenewFailure == "" {
		s.OnRenewFailure = OnFailureStop
	}
	return s
}

// Validate checks the spec without side effects.
func (s JobSpec) Validate() error {
	s = s.withDefaults()
	if s.JobID == "" || !charset.Alnum(s.JobID[0]) || !charset.Only(s.JobID, 1, 64, "._-") {
		return configErr("job id", "%q must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", s.JobID)
	}
	if s.TokenRole == "" || !policyRe.MatchString(s.TokenRole) {
		return configErr("secrets.token_role", "%q must be a token role name", s.TokenRole)
	}
	if len(s.Policies) == 0 {
		return configErr("secrets.policies", "at least one policy is required")
	}
	for _, p := range s.Policies {
		if !policyRe.MatchString(p) || p == "root" {
			return configErr("secrets.policies", "%q is not an allowed policy name", p)
		}
	}
	if s.TTL < time.Second || s.MaxTTL < time.Second {
		return configErr("secrets.ttl", "ttl and max_ttl are required (at least 1s; no longer than the wall-time limit)")
	}
	if s.TTL > s.MaxTTL {
		return configErr("secrets.ttl", "ttl %s exceeds max_ttl %s", s.TTL, s.MaxTTL)
	}
	if s.OnRenewFailure != OnFailureStop && s.OnRenewFailure != OnFailureContinue {
		return configErr("secrets.on_renew_failure", "%q is not one of stop, continue", s.OnRenewFailure)
	}
	if s.UID < 0 || s.GID < 0 {
		return configErr("job user", "uid/gid %d/%d must not be negative", s.UID, s.GID)
	}
	if !filepath.IsAbs(s.HostDir) || filepath.Clean(s.HostDir) != s.HostDir || s.HostDir == "/" {
		return configErr("secrets host dir", "%q must be a clean absolute path", s.HostDir)
	}
	if !filepath.IsAbs(s.SandboxDir) || filepath.Clean(s.SandboxDir) != s.SandboxDir || s.SandboxDir == "/" {
		return configErr("secrets sandbox dir", "%q must be a clean absolute path", s.SandboxDir)
	}
	if len(s.Secrets) == 0 {
		return configErr("secrets", "a job spec without secrets needs no Vault token")
	}
	files := map[string]string{}
	envs := map[string]string{}
	for i, sec := range s.Secrets {
		f := fmt.Sprintf("secrets[%d].path", i)
		if !vpathRe.MatchString(sec.Path) || strings.Contains("/"+sec.Path+"/", "/../") || strings.Contains("/"+sec.Path+"/", "/./") {
			return configErr(f, "%q is not a Vault path", sec.Path)
		}
		if len(sec.Files) == 0 && len(sec.Env) == 0 {
			return &SecretError{Path: sec.Path, Err: ErrUnmapped}
		}
		for field, p := range sec.Files {
			if field == "" {
				return configErr(fmt.Sprintf("secrets[%d].files", i), "empty field name")
			}
			if filepath.Clean(p) != p || !strings.HasPrefix(p, s.SandboxDir+"/") {
				return configErr(fmt.Sprintf("secrets[%d].files.%s", i, field), "%q must be a clean path under %s", p, s.SandboxDir)
			}
			if rel := strings.TrimPrefix(p, s.SandboxDir+"/"); rel == metaDir || strings.HasPrefix(rel, metaDir+"/") {
				return configErr(fmt.Sprintf("secrets[%d].files.%s", i, field), "%q is reserved", p)
			}
			if other, dup := files[p]; dup {
				return configErr(fmt.Sprintf("secrets[%d].files.%s", i, field), "%q is also the file of %s", p, other)
			}
			files[p] = sec.Path + "#" + field
		}
		for name, field := range sec.Env {
			if !envRe.MatchString(name) {
				return configErr(fmt.Sprintf("secrets[%d].env", i), "%q is not a variable name", name)
			}
			if field == "" {
				return configErr(fmt.Sprintf("secrets[%d].env.%s", i, name), "empty field name")
			}
			if other, dup := envs[name]; dup {
				return configErr(fmt.Sprintf("secrets[%d].env.%s", i, name), "also set from %s", other)
			}
			envs[name] = sec.Path
		}
	}
	// A file path must not be a directory of another file.
	for p := range files {
		for q := range files {
			if strings.HasPrefix(q, p+"/") {
				return configErr("secrets files", "%q is both a file and a directory of %q", p, q)
			}
		}
	}
	return nil
}

// Mount is one bind mount the launcher adds to the sandbox (read-only).
type Mount struct {
	Source      string // host path
	Destination string // path inside the sandbox
	ReadOnly    bool
}

// lease is one renewable secret lease of the job token.
type lease struct {
	path      string // secret path (for messages)
	id        string
	ttl       time.Duration
	renewable bool
}

// Grant is a job's credentials: an orphan job token, its leases and the
// delivered files. The job token never leaves it.
type Grant struct {
	c        *Client
	spec     JobSpec
	job      *api.Client // authenticated with the job token
	accessor string
	leases   []lease
	// maxExpiry is creation + MaxTTL. Vault 1.13 caps renewals of a
	// role-created token by the role's token_explicit_max_ttl only, not by
	// the explicit_max_ttl given at creation, so the launcher (the token's
	// only holder) never renews past it.
	maxExpiry time.Time
	rec       jobstate.Recorder
	log       *slog.Logger

	watchOnce sync.Once
	events    chan Event
	stopWatch context.CancelFunc
	watchDone chan struct{}

	revokeMu sync.Mutex
	revoked  bool
}

// Accessor returns the job token's accessor (not a secret).
func (g *Grant) Accessor() string { return g.accessor }

// Mounts returns the bind mount of the delivery directory (read-only).
func (g *Grant) Mounts() []Mount {
	return []Mount{{Source: g.spec.HostDir, Destination: g.spec.SandboxDir, ReadOnly: true}}
}

// EnvMapFile returns the sandbox path of the env map file for
// ExecWithEnvMap (it exists even when no variable is mapped).
func (g *Grant) EnvMapFile() string { return path.Join(g.spec.SandboxDir, metaDir, "env.json") }

// Issue creates the job token, reads every secret with it and delivers the
// fields. Every resource is recorded with rec (accessors and lease ids, never
// values). On any failure everything done so far is undone (token revoked,
// files removed) and the error names the secret path and the cause.
func (c *Client) Issue(ctx context.Context, spec JobSpec, rec jobstate.Recorder) (_ *Grant, err error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = spec.withDefaults()
	log := c.log.With("job", spec.JobID)
	g := &Grant{c: c, spec: spec, rec: rec, log: log}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	// 1. The delivery tmpfs (recorded before it is mounted).
	if err := rec.Record(g.mountRecord()); err != nil {
		return nil, fmt.Errorf("record secrets mount %s: %w", spec.HostDir, err)
	}
	if err := mountTmpfs(spec.HostDir, spec.UID, spec.GID); err != nil {
		return nil, err
	}
	undo = append(undo, func() {
		if e := removeTmpfs(spec.HostDir); e != nil {
			log.Error("remove secrets mount", "dir", spec.HostDir, "err", e)
		}
	})

	// 2. The orphan job token. Its accessor exists only once Vault made it, so
	// an intent is recorded first and the accessor right after; a crash in
	// between leaves a token that dies at its TTL (no longer than wall time).
	if err := rec.Record(jobstate.Resource{Kind: KindToken, Name: spec.JobID, Attrs: map[string]string{"role": spec.TokenRole}}); err != nil {
		return nil, fmt.Errorf("record job token intent: %w", err)
	}
	tokenReq := map[string]any{
		"policies":          spec.Policies,
		"ttl":               int(spec.TTL.Seconds()),
		"explicit_max_ttl":  int(spec.MaxTTL.Seconds()),
		"renewable":         true,
		"no_default_policy": false,
		"display_name":      "securetrain-" + spec.JobID,
		"meta":              map[string]string{"securetrain_job": spec.JobID},
	}
	var s *api.Secret
	g.maxExpiry = time.Now().Add(spec.MaxTTL)
	err = c.launcherDo(ctx, func(ac *api.Client) (e error) {
		s, e = ac.Logical().WriteWithContext(ctx, "auth/token/create/"+spec.TokenRole, tokenReq)
		return e
	})
	if err != nil {
		return nil, fmt.Errorf("job token (token role %q): %w", spec.TokenRole, vaultErr(err))
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("job token (token role %q): %w: no token in response", spec.TokenRole, ErrVault)
	}
	if !s.Auth.Orphan {
		// Revoke it before failing: a child token dies with the launcher's.
		tc, _ := c.withToken(s.Auth.ClientToken)
		if tc != nil {
			_ = tc.Auth().Token().RevokeSelfWithContext(ctx, "")
		}
		return nil, fmt.Errorf("job token (token role %q): %w: token role must set orphan=true", spec.TokenRole, ErrConfig)
	}
	g.accessor = s.Auth.Accessor
	g.job, err = c.withToken(s.Auth.ClientToken)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() {
		if e := g.revokeToken(context.WithoutCancel(ctx)); e != nil {
			log.Error("revoke job token after failed issue", "accessor", g.accessor, "err", e)
		}
	})
	if err := rec.Record(g.tokenRecord()); err != nil {
		return nil, fmt.Errorf("record job token accessor: %w", err)
	}
	log.Info("job token created", "accessor", g.accessor, "role", spec.TokenRole, "ttl", spec.TTL, "max_ttl", spec.MaxTTL, "policies", strings.Join(spec.Policies, ","))

	// 3. Read and deliver each secret.
	envMap := map[string]string{}
	for _, sec := range spec.Secrets {
		if err := g.deliver(ctx, sec, envMap); err != nil {
			return nil, &SecretError{Path: sec.Path, Err: err}
		}
	}
	mapJSON, err := json.Marshal(envMap)
	if err != nil {
		return nil, fmt.Errorf("env map: %w", err)
	}
	if err := writeSecretFile(spec.HostDir, metaDir+"/env.json", mapJSON, spec.UID, spec.GID); err != nil {
		return nil, err
	}
	return g, nil
}

func (g *Grant) mountRecord() jobstate.Resource {
	return jobstate.Resource{Kind: KindMount, Name: g.spec.HostDir, Attrs: map[string]string{"job": g.spec.JobID}}
}

func (g *Grant) tokenRecord() jobstate.Resource {
	ids := make([]string, 0, len(g.leases))
	for _, l := range g.leases {
		ids = append(ids, l.id)
	}
	attrs := map[string]string{"accessor": g.accessor, "role": g.spec.TokenRole}
	if len(ids) > 0 {
		attrs["leases"] = strings.Join(ids, ",")
	}
	return jobstate.Resource{Kind: KindToken, Name: g.spec.JobID, Attrs: attrs}
}

// Records returns the resources of this grant as they stand (the latest
// token record, then the mount), for callers that persist state themselves.
func (g *Grant) Records() []jobstate.Resource {
	return []jobstate.Resource{g.tokenRecord(), g.mountRecord()}
}

// deliver reads one secret with the job token and writes its fields.
func (g *Grant) deliver(ctx context.Context, sec Secret, envMap map[string]string) error {
	readPath, kv2, err := g.resolvePath(ctx, sec.Path)
	if err != nil {
		return err
	}
	s, err := g.job.Logical().ReadWithContext(ctx, readPath)
	if err != nil {
		return vaultErr(err)
	}
	if s == nil {
		return ErrNotFound
	}
	if s.LeaseID != "" {
		g.leases = append(g.leases, lease{path: sec.Path, id: s.LeaseID, ttl: time.Duration(s.LeaseDuration) * time.Second, renewable: s.Renewable})
		if err := g.rec.Record(g.tokenRecord()); err != nil {
			return fmt.Errorf("record lease: %w", err)
		}
		g.log.Info("secret leased", "path", sec.Path, "lease_id", s.LeaseID, "ttl", time.Duration(s.LeaseDuration)*time.Second, "renewable", s.Renewable)
	}
	data := s.Data
	if kv2 {
		d, ok := s.Data["data"].(map[string]any)
		if !ok {
			return ErrNotFound // deleted or destroyed version
		}
		data = d
	}
	value := func(field string) ([]byte, error) {
		v, ok := data[field]
		if !ok || v == nil {
			names := make([]string, 0, len(data))
			for k := range data {
				names = append(names, k)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("%w: %q (fields present: %s)", ErrFieldMissing, field, strings.Join(names, ", "))
		}
		switch v := v.(type) {
		case string:
			return []byte(v), nil
		case json.Number:
			return []byte(v.String()), nil
		case bool:
			return []byte(strconv.FormatBool(v)), nil
		default:
			return json.Marshal(v)
		}
	}
	// Check every field before writing anything.
	fields := map[string][]byte{}
	for field := range sec.Files {
		b, err := value(field)
		if err != nil {
			return err
		}
		fields[field] = b
	}
	for _, field := range sec.Env {
		b, err := value(field)
		if err != nil {
			return err
		}
		fields[field] = b
	}
	for field, p := range sec.Files {
		rel := strings.TrimPrefix(p, g.spec.SandboxDir+"/")
		if err := writeSecretFile(g.spec.HostDir, rel, fields[field], g.spec.UID, g.spec.GID); err != nil {
			return err
		}
	}
	for name, field := range sec.Env {
		if p, ok := sec.Files[field]; ok {
			envMap[name] = p
			continue
		}
		rel := metaDir + "/env/" + name
		if err := writeSecretFile(g.spec.HostDir, rel, fields[field], g.spec.UID, g.spec.GID); err != nil {
			return err
		}
		envMap[name] = path.Join(g.spec.SandboxDir, rel)
	}
	g.log.Info("secret delivered", "path", sec.Path, "files", len(sec.Files), "env", len(sec.Env))
	return nil
}

// resolvePath finds the mount of p and, for KV version 2, returns the data
// path (mount/data/rest).
func (g *Grant) resolvePath(ctx context.Context, p string) (string, bool, error) {
	s, err := g.job.Logical().ReadWithContext(ctx, "sys/internal/ui/mounts/"+p)
	if err != nil {
		if httpStatus(err) == 404 {
			return p, false, nil // no such mount preflight (old Vault): read as is
		}
		return "", false, vaultErr(err)
	}
	if s == nil || s.Data == nil {
		return p, false, nil
	}
	mount, _ := s.Data["path"].(string)
	typ, _ := s.Data["type"].(string)
	opts, _ := s.Data["options"].(map[string]any)
	ver, _ := opts["version"].(string)
	if typ != "kv" || ver != "2" || mount == "" {
		return p, false, nil
	}
	rest := strings.TrimPrefix(p, mount)
	if strings.HasPrefix(rest, "data/") {
		return p, true, nil
	}
	return mount + "data/" + rest, true, nil
}
