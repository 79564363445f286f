package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path"
	"strings"
	"time"
)

// DefaultHostConfig is the host configuration file's path.
const DefaultHostConfig = "/etc/securetrain/securetrain.yaml"

// Host is the node's own configuration: where things live, how the launcher
// reaches Vault, what the network may use. Written by the admin, never by a
// job's user.
type Host struct {
	Version    int           `yaml:"version"`
	Runsc      string        `yaml:"runsc"`       // path of the pinned static runsc
	StateDir   string        `yaml:"state_dir"`   // live job state (tmpfs), e.g. /run/securetrain
	DataDir    string        `yaml:"data_dir"`    // per-job homes, logs and results
	ProfileDir string        `yaml:"profile_dir"` // admin profiles
	Vault      HostVault     `yaml:"vault"`
	Network    HostNetwork   `yaml:"network"`
	Audit      HostAudit     `yaml:"audit"`
	Daemon     HostDaemon    `yaml:"daemon"`
	Integrity  HostIntegrity `yaml:"integrity"`
	Policy     HostPolicy    `yaml:"policy"` // who may run what through the daemon (policy.go)
	Slurm      HostSlurm     `yaml:"slurm"`
	Source     string        `yaml:"-"`
}

// HostVault is how the launcher itself authenticates to Vault.
type HostVault struct {
	Address    string        `yaml:"address"`
	CACert     string        `yaml:"ca_cert"`
	ClientCert string        `yaml:"client_cert"`
	ClientKey  string        `yaml:"client_key"`
	Namespace  string        `yaml:"namespace"`
	Auth       HostVaultAuth `yaml:"auth"`
}

// HostVaultAuth selects the launcher's login method.
type HostVaultAuth struct {
	Method          string `yaml:"method"` // token, approle, jwt, cert
	TokenFile       string `yaml:"token_file"`
	RoleID          string `yaml:"role_id"`
	SecretIDFile    string `yaml:"secret_id_file"`
	SecretIDWrapped bool   `yaml:"secret_id_wrapped"`
	JWTFile         string `yaml:"jwt_file"`
	Role            string `yaml:"role"`
	Mount           string `yaml:"mount"`
}

// HostNetwork bounds what netguard may use on this node.
type HostNetwork struct {
	Pool           string   `yaml:"pool"`            // address pool for job subnets
	Upstreams      []string `yaml:"upstreams"`       // DNS resolvers; default: /etc/resolv.conf
	InternalRanges []string `yaml:"internal_ranges"` // private ranges DNS answers may point at
	AllowMax       []string `yaml:"allow_max"`       // bound on command-line --allow for non-admins
	// NodeSubnet is this node's job subnet (multi-node training): jobs get
	// their addresses from it. It lies inside Pool, or replaces it when
	// Pool is not set.
	NodeSubnet string `yaml:"node_subnet"`
	// Nodes are the cluster's nodes (this one included, found by its
	// subnet = NodeSubnet): their host addresses and job subnets. Jobs'
	// --peers may name them; netguard routes each other node's subnet via
	// its address (host-gateway style, no NAT between peers).
	Nodes []HostNode `yaml:"nodes"`
	// AllocationBlock is how many addresses a distributed job (allocation)
	// reserves on each node, one per local task (SLURM_LOCALID): a power of
	// two from 1 (default: one sandbox per node, torchrun style) to 64
	// (e.g. 8 for one Slurm task per GPU).
	AllocationBlock int `yaml:"allocation_block"`
}

// HostNode is one node of the cluster, as the network sees it.
type HostNode struct {
	Name    string `yaml:"name"`    // the node's name as Slurm knows it
	Address string `yaml:"address"` // its host address, next hop to its jobs
	Subnet  string `yaml:"subnet"`  // its job subnet (its network.node_subnet)
}

// HostAudit says where the audit log lives, and where the signed
// checkpoints of its chain head go.
type HostAudit struct {
	Path string `yaml:"path"`
	// Checkpoints is the file every writer of the log (launchers, daemon,
	// epilog, gc) appends signed checkpoints of the chain head to, signed
	// with integrity.signing_key or integrity.transit_key. It catches a
	// truncated log and a recomputed chain only if the node cannot rewrite
	// it: put it on storage the node may only append to (a remote or
	// append-only mount) or ship it off the node. Where the systemd journal
	// exists, every checkpoint also goes to the journal. Empty: no
	// checkpoints.
	Checkpoints string `yaml:"checkpoints"`
	// CheckpointEvery signs the head after every N appends of one writer;
	// 0: only when the writer closes the log (each job's end, each gc).
	CheckpointEvery int `yaml:"checkpoint_every"`
}

// HostSlurm makes the daemon establish each caller's Slurm job from the
// caller's process (never from its SLURM_* variables) and bound the run by
// that job's allocation.
type HostSlurm struct {
	Enabled bool `yaml:"enabled"`
	// RequireJob refuses callers who are in no Slurm job on this node.
	RequireJob bool   `yaml:"require_job"`
	Conf       string `yaml:"conf"`      // slurm.conf for scontrol/squeue; default: Slurm's own
	NodeName   string `yaml:"node_name"` // this node's Slurm name; default: the short host name
}

// HostDaemon configures `securetrain daemon`.
type HostDaemon struct {
	Socket      string   `yaml:"socket"`
	MetricsAddr string   `yaml:"metrics_addr"`
	AdminGroups []string `yaml:"admin_groups"`
	// GCInterval is how often the daemon retries what its jobs' teardowns
	// could not remove (a token Vault could not be asked to revoke when the
	// job ended, ...). Default 30s.
	GCInterval Duration `yaml:"gc_interval"`
	// Warm keeps sandboxes booted ahead of jobs (warm starts).
	Warm HostWarm `yaml:"warm"`
}

// HostWarm is daemon.warm: for each profile named, Size sandboxes are kept
// booted, each one used by one job and replaced after it (launcher/warm.go).
type HostWarm struct {
	Profiles []string `yaml:"profiles"`
	Size     int      `yaml:"size"` // per profile; default 1 when profiles are named
}

// MaxWarmSize bounds daemon.warm.size: each ready sandbox holds an idle
// gVisor kernel (tens of MB).
const MaxWarmSize = 8

// GC interval bounds: often enough that a Vault outage's leftovers go soon
// after it ends, seldom enough not to load Vault.
const (
	DefaultGCInterval = Duration(30 * time.Second)
	minGCInterval     = Duration(time.Second)
	maxGCInterval     = Duration(time.Hour)
)

// HostIntegrity configures provenance signing.
type HostIntegrity struct {
	SigningKey   string `yaml:"signing_key"`   // ed25519 private key file
	TransitKey   string `yaml:"transit_key"`   // or a Vault transit key name
	TransitMount string `yaml:"transit_mount"` // default transit
	// CodeSnapshotMax bounds the copy of the code directory an attested
	// job runs (its files' total size; default 1GiB).
	CodeSnapshotMax ByteSize `yaml:"code_snapshot_max"`
	// OMSKey signs the outputs of jobs whose profile sets
	// integrity.sign_outputs as OMS (OpenSSF Model Signing) bundles: a
	// PKCS#8 PEM ECDSA P-256/P-384/P-521 or ed25519 key, root-only.
	// Without it, the provenance signer (signing_key or transit_key) signs
	// them with the key method.
	OMSKey string `yaml:"oms_key"`
	// OMSCertificate is the PEM certificate chain (leaf first) of OMSKey:
	// outputs are then signed with the certificate method.
	OMSCertificate string `yaml:"oms_certificate"`
}

// DefaultCodeSnapshotMax is integrity.code_snapshot_max's default.
const DefaultCodeSnapshotMax = 1 << 30

// SetDefaults fills the host configuration's defaults.
func (h *Host) SetDefaults() {
	if h.Version == 0 {
		h.Version = CurrentVersion
	}
	if h.StateDir == "" {
		h.StateDir = "/run/securetrain"
	}
	if h.DataDir == "" {
		h.DataDir = "/var/lib/securetrain"
	}
	if h.ProfileDir == "" {
		h.ProfileDir = DefaultProfileDir
	}
	if h.Network.Pool == "" && h.Network.NodeSubnet != "" {
		h.Network.Pool = h.Network.NodeSubnet
	}
	if h.Network.Pool == "" {
		h.Network.Pool = "10.213.0.0/16"
	}
	if h.Audit.Path == "" {
		h.Audit.Path = "/var/log/securetrain/audit.jsonl"
	}
	if h.Daemon.Socket == "" {
		h.Daemon.Socket = path.Join(h.StateDir, "securetrain.sock")
	}
	if h.Daemon.GCInterval == 0 {
		h.Daemon.GCInterval = DefaultGCInterval
	}
	if len(h.Daemon.Warm.Profiles) > 0 && h.Daemon.Warm.Size == 0 {
		h.Daemon.Warm.Size = 1
	}
	if h.Integrity.TransitMount == "" {
		h.Integrity.TransitMount = "transit"
	}
	if h.Integrity.CodeSnapshotMax == 0 {
		h.Integrity.CodeSnapshotMax = DefaultCodeSnapshotMax
	}
}

// Validate checks the host configuration.
func (h *Host) Validate() error {
	var errs []error
	add := func(field, format string, args ...any) {
		errs = append(errs, &FieldError{File: h.Source, Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if h.Version != CurrentVersion {
		add("version", "unsupported version %d; this build reads version: %d", h.Version, CurrentVersion)
	}
	for _, d := range []struct{ field, path string }{{"state_dir", h.StateDir}, {"data_dir", h.DataDir}, {"profile_dir", h.ProfileDir}, {"audit.path", h.Audit.Path}} {
		if !path.IsAbs(d.path) {
			add(d.field, "must be an absolute path, got %q", d.path)
		}
	}
	if h.Runsc != "" && !path.IsAbs(h.Runsc) {
		add("runsc", "must be an absolute path, got %q", h.Runsc)
	}
	if _, err := netip.ParsePrefix(h.Network.Pool); err != nil {
		add("network.pool", "must be an address range such as 10.213.0.0/16, got %q", h.Network.Pool)
	}
	errs = append(errs, h.Network.validateNodes(h.Source)...)
	for i, r := range h.Network.InternalRanges {
		if _, err := netip.ParsePrefix(r); err != nil {
			add(fmt.Sprintf("network.internal_ranges[%d]", i), "must be an address range such as 10.0.0.0/8, got %q", r)
		}
	}
	for i, u := range h.Network.Upstreams {
		if _, err := netip.ParseAddr(u); err != nil {
			if _, err := netip.ParseAddrPort(u); err != nil {
				add(fmt.Sprintf("network.upstreams[%d]", i), "must be a resolver address such as 127.0.0.53 or 127.0.0.53:53, got %q", u)
			}
		}
	}
	if g := h.Daemon.GCInterval; g < minGCInterval || g > maxGCInterval {
		add("daemon.gc_interval", "must be between %s and %s, got %s", minGCInterval, maxGCInterval, g)
	}
	if w := h.Daemon.Warm; w.Size < 0 || w.Size > MaxWarmSize || (w.Size > 0 && len(w.Profiles) == 0) {
		add("daemon.warm.size", "must be between 1 and %d sandboxes per profile, with daemon.warm.profiles naming the profiles, got %d", MaxWarmSize, w.Size)
	}
	if h.Integrity.SigningKey != "" && !path.IsAbs(h.Integrity.SigningKey) {
		add("integrity.signing_key", "must be an absolute path to an ed25519 private key file, got %q", h.Integrity.SigningKey)
	}
	if h.Integrity.OMSKey != "" && !path.IsAbs(h.Integrity.OMSKey) {
		add("integrity.oms_key", "must be an absolute path to a PKCS#8 PEM private key file, got %q", h.Integrity.OMSKey)
	}
	if h.Integrity.OMSCertificate != "" && (h.Integrity.OMSKey == "" || !path.IsAbs(h.Integrity.OMSCertificate)) {
		add("integrity.oms_certificate", "must be an absolute path to the PEM certificate chain of integrity.oms_key (which must be set), got %q", h.Integrity.OMSCertificate)
	}
	if h.Integrity.SigningKey != "" && h.Integrity.TransitKey != "" {
		add("integrity", "give signing_key (a key file) or transit_key (Vault transit), not both")
	}
	if h.Audit.Checkpoints != "" {
		if !path.IsAbs(h.Audit.Checkpoints) {
			add("audit.checkpoints", "must be an absolute path (storage the node cannot rewrite), got %q", h.Audit.Checkpoints)
		}
		if h.Audit.Checkpoints == h.Audit.Path {
			add("audit.checkpoints", "must not be the audit log itself (%s)", h.Audit.Path)
		}
		if h.Integrity.SigningKey == "" && h.Integrity.TransitKey == "" {
			add("audit.checkpoints", "checkpoints are signed: set integrity.signing_key or integrity.transit_key")
		}
	}
	if h.Audit.CheckpointEvery < 0 {
		add("audit.checkpoint_every", "must be 0 (at close only) or a positive number of appends, got %d", h.Audit.CheckpointEvery)
	} else if h.Audit.CheckpointEvery > 0 && h.Audit.Checkpoints == "" {
		add("audit.checkpoint_every", "needs audit.checkpoints (where the checkpoints go)")
	}
	if s := h.Slurm; !s.Enabled {
		if s.RequireJob || s.Conf != "" || s.NodeName != "" {
			add("slurm", "require_job, conf and node_name need enabled: true")
		}
	} else {
		if s.Conf != "" && !path.IsAbs(s.Conf) {
			add("slurm.conf", "must be an absolute path to slurm.conf, got %q", s.Conf)
		}
		if s.NodeName != "" && (strings.ContainsAny(s.NodeName, " \t\n/,=") || strings.HasPrefix(s.NodeName, "-")) {
			add("slurm.node_name", "must be one Slurm node name (no spaces, '/', ',', '=' or leading '-'), got %q", s.NodeName)
		}
	}
	switch h.Vault.Auth.Method {
	case "", "token", "approle", "jwt", "cert":
	default:
		add("vault.auth.method", "must be token, approle, jwt or cert, got %q", h.Vault.Auth.Method)
	}
	errs = append(errs, h.Policy.validate(h.Source)...)
	return errors.Join(errs...)
}

// LoadHost reads the host configuration. A missing file at the default path
// means all defaults; a missing file named explicitly is an error.
func LoadHost(file string, explicit bool) (*Host, error) {
	var h Host
	var lines fieldLines
	data, err := os.ReadFile(file)
	switch {
	case err == nil:
		if lines, err = decodeStrict(file, data, &h); err != nil {
			return nil, err
		}
		if h.Version == 0 {
			return nil, &FieldError{File: file, Field: "version", Msg: "missing; this build reads version: 1"}
		}
	case errors.Is(err, fs.ErrNotExist) && !explicit:
	default:
		return nil, fmt.Errorf("host config %s: %w", file, unwrapPathErr(err))
	}
	h.Source = file
	h.SetDefaults()
	if err := h.Validate(); err != nil {
		annotate(err, file, lines)
		return nil, err
	}
	return &h, nil
}
