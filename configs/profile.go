package configs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// CurrentVersion is the only profile format version this build reads.
const CurrentVersion = 1

// Profile says how one kind of job runs: its limits, its sandbox, its network
// allowlist, its credentials and its pinned inputs.
type Profile struct {
	Version     int       `yaml:"version"`
	Name        string    `yaml:"name"`
	Description string    `yaml:"description"`
	Limits      Limits    `yaml:"limits"`
	Sandbox     Sandbox   `yaml:"sandbox"`
	GPU         GPU       `yaml:"gpu"`
	Network     Network   `yaml:"network"`
	Vault       Vault     `yaml:"vault"`
	Secrets     []Secret  `yaml:"secrets"`
	Inputs      []Input   `yaml:"inputs"`
	Env         Env       `yaml:"env"`
	Integrity   Integrity `yaml:"integrity"`

	// Source is where the profile was loaded from (file path or
	// "builtin:NAME"); Digest is the SHA-256 of its bytes. Not YAML fields.
	Source string `yaml:"-"`
	Digest string `yaml:"-"`
}

// Limits are the job's resource limits. Hard limits (cpus, memory, pids,
// scratch, home, shm) go into the OCI spec and the sandbox's cgroup; soft limits
// (budgets, gpu_memory, sustained overuse) are enforced by the supervisor.
type Limits struct {
	CPUs       float64  `yaml:"cpus"`
	Memory     ByteSize `yaml:"memory"`
	Pids       int64    `yaml:"pids"`
	WallTime   Duration `yaml:"wall_time"`
	Scratch    ByteSize `yaml:"scratch"` // in-memory overlay of the root filesystem and /tmp
	Home       ByteSize `yaml:"home"`    // the job's in-memory $HOME
	Shm        ByteSize `yaml:"shm"`     // /dev/shm
	GPUs       GPUSet   `yaml:"gpus"`
	GPUMemory  ByteSize `yaml:"gpu_memory"`  // per GPU, soft
	CPUSeconds float64  `yaml:"cpu_seconds"` // budget, soft
	GPUSeconds float64  `yaml:"gpu_seconds"` // budget, soft
	Grace      Grace    `yaml:"grace"`
	StopGrace  Duration `yaml:"stop_grace"` // between SIGTERM and SIGKILL when the launcher stops a job
}

// Grace is how long each soft limit may be exceeded before the job is killed.
type Grace struct {
	CPUs      Duration `yaml:"cpus"`
	GPUMemory Duration `yaml:"gpu_memory"`
}

// GPUSet selects GPUs: none, all, a count, or a list of indices.
type GPUSet struct {
	All     bool
	Count   int
	Indices []int
}

// None reports whether no GPU is asked for.
func (g GPUSet) None() bool { return !g.All && g.Count == 0 && len(g.Indices) == 0 }

func (g GPUSet) String() string {
	switch {
	case g.All:
		return "all"
	case len(g.Indices) > 0:
		s := make([]string, len(g.Indices))
		for i, x := range g.Indices {
			s[i] = strconv.Itoa(x)
		}
		return strings.Join(s, ",")
	case g.Count > 0:
		return strconv.Itoa(g.Count)
	}
	return "none"
}

// ParseGPUSet parses the --gpus flag: all, none, N (a count) or a list such as 0,2.
func ParseGPUSet(s string) (GPUSet, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "all":
		return GPUSet{All: true}, nil
	case "", "none", "0":
		return GPUSet{}, nil
	}
	if !strings.Contains(s, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return GPUSet{}, fmt.Errorf("want all, none, a count or a list of GPU indices such as 0,1; got %q", s)
		}
		return GPUSet{Count: n}, nil
	}
	return parseIndices(strings.Split(s, ","), s)
}

func parseIndices(parts []string, orig string) (GPUSet, error) {
	var g GPUSet
	seen := map[int]bool{}
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 0 {
			return GPUSet{}, fmt.Errorf("want all, none, a count or a list of GPU indices such as 0,1; got %q", orig)
		}
		if seen[n] {
			return GPUSet{}, fmt.Errorf("GPU %d listed twice in %q", n, orig)
		}
		seen[n] = true
		g.Indices = append(g.Indices, n)
	}
	return g, nil
}

// UnmarshalYAML accepts all, none, a count, "0,1", or a list [0, 1].
func (g *GPUSet) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		v, err := ParseGPUSet(n.Value)
		if err != nil {
			return err
		}
		*g = v
		return nil
	case yaml.SequenceNode:
		parts := make([]string, len(n.Content))
		for i, c := range n.Content {
			c = resolve(c)
			if c.Kind != yaml.ScalarNode {
				return fmt.Errorf("want a list of GPU indices such as [0, 1], got %s in the list", kindName(c))
			}
			parts[i] = c.Value
		}
		if len(parts) == 0 {
			*g = GPUSet{}
			return nil
		}
		v, err := parseIndices(parts, "["+strings.Join(parts, ", ")+"]")
		if err != nil {
			return err
		}
		*g = v
		return nil
	}
	return fmt.Errorf("want all, none, a count or a list of GPU indices, got %s", kindName(n))
}

// MarshalYAML implements yaml.Marshaler. Indices are written as a list: a
// single index written as "0" would read back as a count of zero GPUs.
func (g GPUSet) MarshalYAML() (any, error) {
	if !g.All && len(g.Indices) > 0 {
		return g.Indices, nil
	}
	return g.String(), nil
}

// Sandbox says what the job sees.
type Sandbox struct {
	// Rootfs is "host" (the host's system directories, read-only) or the path
	// of an image root filesystem directory.
	Rootfs string `yaml:"rootfs"`
	// Python is the interpreter whose environment (venv/conda prefix) is
	// mounted into the sandbox; empty means detect it from the command.
	Python string `yaml:"python"`
	// Output is the writable outputs directory, relative to the code dir.
	Output string `yaml:"output"`
	// Mask lists extra names inside the code directory hidden from the job,
	// on top of the built-in credential list (.ssh, .aws, .netrc, ...).
	Mask []string `yaml:"mask"`
	// LogLimit caps the per-job log of stdout/stderr.
	LogLimit ByteSize `yaml:"log_limit"`
	// Platform is runsc's platform (systrap, ptrace, kvm).
	Platform string `yaml:"platform"`
}

// GPU holds nvproxy settings.
type GPU struct {
	// Capabilities are the NVIDIA driver capabilities the job may use.
	Capabilities []string `yaml:"capabilities"`
}

// Network is the job's egress policy.
type Network struct {
	// Mode is none (no network at all) or sandbox (own namespace, allowlist).
	Mode string `yaml:"mode"`
	// Policy is enforce (first violation kills), block (drop and record) or
	// audit (allow and record every destination).
	Policy       string   `yaml:"policy"`
	Allow        []string `yaml:"allow"`
	Peers        []string `yaml:"peers"`
	PeerPorts    []string `yaml:"peer_ports"`
	EgressBudget ByteSize `yaml:"egress_budget"`
	Unrestricted bool     `yaml:"unrestricted"`
	DNSMinTTL    Duration `yaml:"dns_min_ttl"`
}

// Vault is how the job's own token is made.
type Vault struct {
	TokenRole      string   `yaml:"token_role"`
	Policies       []string `yaml:"policies"`
	TTL            Duration `yaml:"ttl"`
	OnRenewFailure string   `yaml:"on_renew_failure"` // stop or continue
}

// Secret is one Vault path whose fields reach the job as files and/or
// environment variables.
type Secret struct {
	Path  string            `yaml:"path"`
	Files map[string]string `yaml:"files"` // field -> path inside the sandbox
	Env   map[string]string `yaml:"env"`   // VARIABLE -> field
}

// Input is a pinned dataset, model or code tree.
type Input struct {
	Name     string `yaml:"name"`
	Kind     string `yaml:"kind"` // dataset, model, code
	Path     string `yaml:"path"`
	Target   string `yaml:"target"`   // mount point inside the sandbox
	SHA256   string `yaml:"sha256"`   // for a single file
	Manifest string `yaml:"manifest"` // sha256sum-format manifest for a directory
	// Signature pins a model (file or directory) by its publisher's OMS
	// (OpenSSF Model Signing v1.0) signature instead of sha256/manifest.
	Signature *InputSignature `yaml:"signature"`
	// Accept lists SHA-256 digests of model files accepted although the
	// scanner cannot prove them safe.
	Accept []string `yaml:"accept"`
}

// InputSignature is an OMS signature and what it must be signed by: a
// public key, or a CA and the signer identity it must certify. Relative
// file paths are resolved next to the profile file.
type InputSignature struct {
	Bundle   string `yaml:"bundle"`   // the OMS bundle (e.g. model.sig)
	Key      string `yaml:"key"`      // trusted public key (PEM): key method
	CA       string `yaml:"ca"`       // trusted CA certificates (PEM): certificate method
	Identity string `yaml:"identity"` // with ca: the leaf's e-mail, URI or DNS name, or common name
	// Sigstore names Sigstore trust material (trusted_root.json); the
	// sigstore method is refused by this build (see docs/model-signing.md).
	Sigstore string `yaml:"sigstore"`
	// AllowIgnored lists the paths a signer may leave out of the signature
	// (its ignore_paths) besides .git, .gitattributes, .github, .gitignore
	// and the bundle itself. They are hidden from the job.
	AllowIgnored []string `yaml:"allow_ignored"`
}

// Env is the job's environment beyond the built-in allowlist.
type Env struct {
	Pass []string          `yaml:"pass"` // names copied from the caller's environment
	Set  map[string]string `yaml:"set"`
}

// Integrity configures provenance.
type Integrity struct {
	Provenance bool `yaml:"provenance"`
	// SignOutputs signs the job's outputs directory, when the job ends, as
	// an OMS (OpenSSF Model Signing v1.0) bundle with the host's key.
	SignOutputs bool `yaml:"sign_outputs"`
}

// ParseProfile decodes and validates a profile. file names it in errors.
// Every error is a *FieldError, or an errors.Join of them (one per line),
// each naming the file and, where known, the line.
func ParseProfile(file string, data []byte) (*Profile, error) {
	var p Profile
	lines, err := decodeStrict(file, data, &p)
	if err != nil {
		return nil, err
	}
	if p.Version == 0 {
		return nil, &FieldError{File: file, Field: "version", Msg: "missing; this build reads version: 1"}
	}
	if p.Version != CurrentVersion {
		return nil, &FieldError{File: file, Line: lines.line("version"), Field: "version", Msg: fmt.Sprintf("unsupported version %d; this build reads version: %d", p.Version, CurrentVersion)}
	}
	p.SetDefaults()
	if err := p.Validate(); err != nil {
		annotate(err, file, lines)
		return nil, err
	}
	sum := sha256.Sum256(data)
	p.Digest = "sha256:" + hex.EncodeToString(sum[:])
	p.Source = file
	return &p, nil
}
