package configs

import (
	"errors"
	"fmt"
	"math"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Bounds of the values a profile may hold.
const (
	MaxCPUs     = 1024
	MinMemory   = 16 << 20
	MaxMemory   = 16 << 40
	MinPids     = 16
	MaxPids     = 4 << 20
	MaxWallTime = 30 * 24 * time.Hour
	MinScratch  = 1 << 20
	MaxGPUs     = 64 // bound on a GPU count and on GPU indices
)

var (
	envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	hexSHA  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// secretField is a field of a Vault secret's data, as files: and env:
	// name it. "<<", "" or "a: b" would not survive being written back out.
	secretField = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	platform    = []string{"systrap", "ptrace", "kvm"}
	gpuCaps     = []string{"compute", "utility", "graphics", "video"}
)

// Validate runs every check and returns all failures joined, each a
// *FieldError naming the field and what is allowed.
func (p *Profile) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	l := p.Limits
	if !(l.CPUs >= 0.01 && l.CPUs <= MaxCPUs) { // also refuses NaN
		add("limits.cpus", "must be between 0.01 and %d, got %g", MaxCPUs, l.CPUs)
	}
	if l.Memory < MinMemory || l.Memory > MaxMemory {
		add("limits.memory", "must be between 16MiB and 16TiB, got %s", l.Memory)
	}
	if l.Pids < MinPids || l.Pids > MaxPids {
		add("limits.pids", "must be between %d and %d, got %d", MinPids, MaxPids, l.Pids)
	}
	if l.WallTime.D() < time.Second || l.WallTime.D() > MaxWallTime {
		add("limits.wall_time", "must be between 1s and 720h, got %s", l.WallTime)
	}
	if l.Scratch < MinScratch || l.Scratch > MaxMemory {
		add("limits.scratch", "must be between 1MiB and 16TiB, got %s", l.Scratch)
	}
	if l.Home < MinScratch || l.Home > MaxMemory {
		add("limits.home", "must be between 1MiB and 16TiB, got %s", l.Home)
	}
	if l.Shm < MinScratch || l.Shm > l.Memory {
		add("limits.shm", "must be between 1MiB and limits.memory (%s), got %s", l.Memory, l.Shm)
	}
	if !(l.CPUSeconds >= 0) || math.IsInf(l.CPUSeconds, 0) {
		add("limits.cpu_seconds", "must be a non-negative number (0: no budget), got %g", l.CPUSeconds)
	}
	if !(l.GPUSeconds >= 0) || math.IsInf(l.GPUSeconds, 0) {
		add("limits.gpu_seconds", "must be a non-negative number (0: no budget), got %g", l.GPUSeconds)
	}
	if l.GPUs.Count > MaxGPUs || slices.ContainsFunc(l.GPUs.Indices, func(i int) bool { return i >= MaxGPUs }) {
		add("limits.gpus", "must be all, none, a count up to %d or indices below %d, got %s", MaxGPUs, MaxGPUs, l.GPUs)
	}
	if l.StopGrace.D() > 10*time.Minute {
		add("limits.stop_grace", "must be at most 10m, got %s", l.StopGrace)
	}
	s := p.Sandbox
	if s.Rootfs != "host" && !path.IsAbs(s.Rootfs) {
		add("sandbox.rootfs", "must be host or an absolute directory path, got %q", s.Rootfs)
	}
	if s.Python != "" && !path.IsAbs(s.Python) {
		add("sandbox.python", "must be an absolute path to an interpreter, got %q", s.Python)
	}
	if !relInside(s.Output) {
		add("sandbox.output", "must be a relative path inside the code directory without .., got %q", s.Output)
	}
	for i, m := range s.Mask {
		if !relInside(m) {
			add(fmt.Sprintf("sandbox.mask[%d]", i), "must be a relative path inside the code directory without .., got %q", m)
		}
	}
	if !slices.Contains(platform, s.Platform) {
		add("sandbox.platform", "must be one of %s, got %q", strings.Join(platform, ", "), s.Platform)
	}
	for i, c := range p.GPU.Capabilities {
		if !slices.Contains(gpuCaps, c) {
			add(fmt.Sprintf("gpu.capabilities[%d]", i), "must be one of %s, got %q", strings.Join(gpuCaps, ", "), c)
		}
	}
	n := p.Network
	switch n.Mode {
	case "none":
		if len(n.Allow) > 0 || len(n.Peers) > 0 {
			add("network.mode", "is none, but network.allow or network.peers is set; use mode: sandbox")
		}
	case "sandbox":
	default:
		add("network.mode", "must be none or sandbox, got %q", n.Mode)
	}
	if !slices.Contains([]string{"enforce", "block", "audit"}, n.Policy) {
		add("network.policy", "must be enforce, block or audit, got %q", n.Policy)
	}
	for i, a := range n.Allow {
		if strings.TrimSpace(a) == "" {
			add(fmt.Sprintf("network.allow[%d]", i), "is empty; want HOST, HOST:PORT, CIDR or CIDR:PORT-PORT")
		}
	}
	if len(p.Secrets) > 0 {
		v := p.Vault
		if v.TokenRole == "" {
			add("vault.token_role", "is required when secrets are listed (the Vault token role that creates orphan job tokens)")
		}
		if len(v.Policies) == 0 {
			add("vault.policies", "is required when secrets are listed")
		}
		if v.TTL.D() < time.Second || v.TTL.D() > l.WallTime.D() {
			add("vault.ttl", "must be between 1s and limits.wall_time (%s), got %s", l.WallTime, v.TTL)
		}
	}
	if !slices.Contains([]string{"stop", "continue"}, p.Vault.OnRenewFailure) {
		add("vault.on_renew_failure", "must be stop or continue, got %q", p.Vault.OnRenewFailure)
	}
	// Each variable and each secret file comes from one place only: which
	// of two would win is up to the launcher, not visible in the profile.
	envFrom := map[string]string{}
	envOnce := func(field, name string) {
		if first, ok := envFrom[name]; ok {
			add(field, "sets %s, as %s does; give each variable once", name, first)
			return
		}
		envFrom[name] = field
	}
	secretFiles := map[string]string{}
	for i, name := range p.Env.Pass {
		if checkEnvName(name) == nil {
			envOnce(fmt.Sprintf("env.pass[%d]", i), name)
		}
	}
	for _, name := range sortedKeys(p.Env.Set) {
		if checkEnvName(name) == nil {
			envOnce(join("env.set", name), name)
		}
	}
	for i, sec := range p.Secrets {
		f := fmt.Sprintf("secrets[%d]", i)
		if sec.Path == "" || strings.HasPrefix(sec.Path, "/") {
			add(f+".path", "must be a Vault path such as database/creds/reader, got %q", sec.Path)
		}
		if len(sec.Files) == 0 && len(sec.Env) == 0 {
			add(f, "maps no field; give files: or env:")
		}
		for _, field := range sortedKeys(sec.Files) {
			dst, fp := sec.Files[field], join(f+".files", field)
			if !secretField.MatchString(field) {
				add(fp, "names a secret field %q; a field name holds letters, digits, '_', '-' and '.'", field)
			} else if !strings.HasPrefix(path.Clean(dst), "/run/secrets/") {
				add(fp, "must be a path under /run/secrets/, got %q", dst)
			} else if first, ok := secretFiles[path.Clean(dst)]; ok {
				add(fp, "writes %s, as %s does; give each file once", path.Clean(dst), first)
			} else {
				secretFiles[path.Clean(dst)] = fp
			}
		}
		for _, name := range sortedKeys(sec.Env) {
			if err := checkEnvName(name); err != nil {
				add(join(f+".env", name), "%v", err)
			} else if field := sec.Env[name]; !secretField.MatchString(field) {
				add(join(f+".env", name), "names a secret field %q; a field name holds letters, digits, '_', '-' and '.'", field)
			} else {
				envOnce(join(f+".env", name), name)
			}
		}
	}
	for i, in := range p.Inputs {
		f := fmt.Sprintf("inputs[%d]", i)
		if !slices.Contains([]string{"dataset", "model", "code"}, in.Kind) {
			add(f+".kind", "must be dataset, model or code, got %q", in.Kind)
		}
		if !path.IsAbs(in.Path) {
			add(f+".path", "must be an absolute path, got %q", in.Path)
		}
		if in.Target != "" && !path.IsAbs(in.Target) {
			add(f+".target", "must be an absolute path inside the sandbox, got %q", in.Target)
		}
		if n := btoi(in.SHA256 != "") + btoi(in.Manifest != "") + btoi(in.Signature != nil); n != 1 {
			add(f, "needs exactly one of sha256 (a file), manifest (a directory) or signature (an OMS model signature)")
		}
		if sg := in.Signature; sg != nil {
			validateSignature(f+".signature", in.Kind, sg, add)
		}
		if in.SHA256 != "" && !hexSHA.MatchString(in.SHA256) {
			add(f+".sha256", "must be 64 lowercase hex digits")
		}
		for j, a := range in.Accept {
			if !hexSHA.MatchString(a) {
				add(fmt.Sprintf("%s.accept[%d]", f, j), "must be 64 lowercase hex digits")
			}
		}
	}
	for i, name := range p.Env.Pass {
		if err := checkEnvName(name); err != nil {
			add(fmt.Sprintf("env.pass[%d]", i), "%v", err)
		}
	}
	for _, name := range sortedKeys(p.Env.Set) {
		if err := checkEnvName(name); err != nil {
			add(join("env.set", name), "%v", err)
		}
	}
	return errors.Join(errs...)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// validateSignature checks an input's OMS signature: a bundle and exactly
// one trust (key, or ca with identity); sigstore is refused, closed.
func validateSignature(f, kind string, sg *InputSignature, add func(string, string, ...any)) {
	if kind != "model" {
		add(f, "an OMS signature pins kind: model inputs, this one is %q", kind)
	}
	if sg.Bundle == "" {
		add(f+".bundle", "missing: the OMS signature file (e.g. model.sig)")
	}
	switch n := btoi(sg.Key != "") + btoi(sg.CA != "") + btoi(sg.Sigstore != ""); {
	case n != 1:
		add(f, "needs exactly one trust: key (a public key file) or ca (CA certificates, with identity)")
	case sg.Sigstore != "":
		add(f+".sigstore", "the sigstore method needs Fulcio and Rekor verification, which this build does not do offline; trust the publisher's key or CA instead")
	case sg.CA != "" && sg.Identity == "":
		add(f+".identity", "missing: with ca, name the signer identity the certificate must carry (e-mail, URI, DNS name or common name)")
	case sg.Key != "" && sg.Identity != "":
		add(f+".identity", "only with ca: a key names its signer itself")
	}
	for j, p := range sg.AllowIgnored {
		if !relInside(p) || path.Clean(p) != p || strings.ContainsAny(p, "*?[") {
			add(fmt.Sprintf("%s.allow_ignored[%d]", f, j), "must be a clean relative path inside the model without globs, got %q", p)
		}
	}
}

// relInside reports whether p is a non-empty relative path that stays inside
// its base directory.
func relInside(p string) bool {
	return p != "" && !path.IsAbs(p) && !strings.ContainsRune(p, 0) &&
		!slices.Contains(strings.Split(p, "/"), "..")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// checkEnvName refuses variable names that must never reach a job: the
// launcher's Vault identity, dynamic-loader injection, and switches that turn
// off PyTorch's safe loading.
func checkEnvName(name string) error {
	if !envName.MatchString(name) {
		return fmt.Errorf("%q is not a valid environment variable name", name)
	}
	if IsForbiddenEnv(name) {
		return fmt.Errorf("%s may never be passed to a job (launcher credentials, loader injection or unsafe model loading)", name)
	}
	return nil
}

// IsForbiddenEnv reports whether a variable must never reach a job.
func IsForbiddenEnv(name string) bool {
	u := strings.ToUpper(name)
	switch {
	case strings.HasPrefix(u, "VAULT_"), strings.HasPrefix(u, "LD_"),
		strings.HasPrefix(u, "SECURETRAIN_"),
		u == "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", u == "TORCH_FORCE_WEIGHTS_ONLY_LOAD",
		u == "PYTHONSTARTUP", u == "PYTHONINSPECT", u == "BASH_ENV", u == "ENV":
		return true
	}
	return false
}
