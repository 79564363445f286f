// Package provenance writes, signs and verifies the record of a training
// run: an in-toto Statement (v1) with a SLSA-provenance-style predicate that
// ties the output files to the command, profile, code, inputs, Python
// distributions and sandbox that produced them, plus what the run did
// (destinations contacted, usage, violations).
//
// Collecting it never runs the user's code as root: git state is read by
// parsing .git (no git, so no hooks, fsmonitor or helpers), Python
// distributions are read from their metadata files (Python is not started,
// so no .pth file runs), and outputs are hashed as regular files only,
// opened with O_NOFOLLOW|O_NONBLOCK after an lstat, so a symlink is not
// followed and a FIFO cannot hang the launcher.
package provenance

import (
	"encoding/json"
	"time"

	"github.com/securetrain/securetrain/violation"
)

// Fixed identifiers.
const (
	StatementType = "https://in-toto.io/Statement/v1"
	PredicateType = "https://slsa.dev/provenance/v1"
	PayloadType   = "application/vnd.in-toto+json"
	BuildType     = "https://securetrain.dev/training-run/v1"
)

// Statement is an in-toto v1 Statement.
type Statement struct {
	Type          string               `json:"_type"`
	Subject       []ResourceDescriptor `json:"subject"`
	PredicateType string               `json:"predicateType"`
	Predicate     Predicate            `json:"predicate"`
}

// ResourceDescriptor is in-toto's resource descriptor.
type ResourceDescriptor struct {
	Name        string            `json:"name,omitempty"`
	URI         string            `json:"uri,omitempty"`
	Digest      map[string]string `json:"digest,omitempty"`
	MediaType   string            `json:"mediaType,omitempty"`
	Annotations map[string]any    `json:"annotations,omitempty"`
}

// Predicate follows SLSA provenance v1.
type Predicate struct {
	BuildDefinition BuildDefinition `json:"buildDefinition"`
	RunDetails      RunDetails      `json:"runDetails"`
}

// BuildDefinition says what was run with what.
type BuildDefinition struct {
	BuildType            string               `json:"buildType"`
	ExternalParameters   ExternalParameters   `json:"externalParameters"`
	InternalParameters   InternalParameters   `json:"internalParameters"`
	ResolvedDependencies []ResourceDescriptor `json:"resolvedDependencies"`
}

// ExternalParameters are what the user chose.
type ExternalParameters struct {
	Command []string   `json:"command"`
	Profile ProfileRef `json:"profile"`
}

// ProfileRef names the profile and its content digest.
type ProfileRef struct {
	Name   string `json:"name"`
	Path   string `json:"path,omitempty"`
	SHA256 string `json:"sha256"`
}

// InternalParameters describe the environment the launcher set up.
type InternalParameters struct {
	RunscVersion      string `json:"runscVersion,omitempty"`
	GPUDriver         string `json:"gpuDriver,omitempty"`
	PythonDistsSHA256 string `json:"pythonDistributionsSha256,omitempty"`
	InputsRecheck     string `json:"inputsRecheck"` // "unchanged", or what changed
	// CodeRecheck compares the host's code directory at the end of the
	// run with the snapshot the job ran: "unchanged", or what changed on
	// the host meanwhile (the job never saw it). Empty when the code was
	// not snapshotted.
	CodeRecheck    string    `json:"codeRecheck,omitempty"`
	OutputsSkipped []Skipped `json:"outputsSkipped,omitempty"`
	ExitCode       int       `json:"exitCode"`
}

// Skipped is an output entry that was not hashed (not a regular file).
type Skipped struct {
	Path string `json:"path"`
	Why  string `json:"why"`
}

// RunDetails says who ran it, when, and what happened.
type RunDetails struct {
	Builder    Builder              `json:"builder"`
	Metadata   Metadata             `json:"metadata"`
	Byproducts []ResourceDescriptor `json:"byproducts,omitempty"`
}

// Builder identifies the launcher.
type Builder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

// Metadata of the invocation.
type Metadata struct {
	InvocationID string    `json:"invocationId"`
	StartedOn    time.Time `json:"startedOn"`
	FinishedOn   time.Time `json:"finishedOn"`
}

// Run is what the launcher knows at the end of a job; Build turns it into a
// Statement. Paths are absolute host paths.
type Run struct {
	JobID     string
	BuilderID string            // e.g. "https://securetrain.dev/launcher@<host>"
	Version   map[string]string // launcher version etc.
	Command   []string
	Profile   ProfileRef
	CodeDir   string // "" if the job has no code dir
	// Code is the code directory's state when the job started, digested
	// from the snapshot the job ran; nil reads CodeDir now.
	Code *CodeState
	// CodeChanges lists what changed in the host's code directory during
	// the run (CodeSnapshot.Recheck); used only with Code.
	CodeChanges   []string
	Inputs        []Input  // pinned inputs, as verified
	SitePackages  []string // the job interpreter's site-packages / dist-packages directories
	RunscVersion  string
	GPUDriver     string
	Destinations  []string // hosts/addresses the job contacted
	Usage         json.RawMessage
	Violations    []violation.Violation
	InputsRecheck error // result of pin.Recheck at the end of the run (nil: unchanged)
	OutputsDir    string
	// OutputsSignature is the OMS bundle securetrain signed of OutputsDir.
	OutputsSignature *ModelSignature
	StartedOn        time.Time
	FinishedOn       time.Time
	ExitCode         int
}

// Input is one pinned input: a file digest, or a directory's manifest
// digest (pin.ManifestDigest).
type Input struct {
	Name   string `json:"name"`
	Path   string `json:"path"`
	Dir    bool   `json:"dir"`
	SHA256 string `json:"sha256"`
	// Signature, when the input was verified by its OMS signature.
	Signature *ModelSignature `json:"signature,omitempty"`
}

// ModelSignature is a verified OMS (OpenSSF Model Signing) signature: of a
// model input, or the one securetrain made of the job's outputs.
type ModelSignature struct {
	Bundle       string `json:"bundle"`       // path of the OMS bundle
	BundleSHA256 string `json:"bundleSha256"` // its digest
	Method       string `json:"method"`       // key or certificate
	Signer       string `json:"signer"`       // key fingerprint, or certificate identity and issuer
	RootDigest   string `json:"rootDigest"`   // the OMS subject's sha256 root digest
}

// CodeState is what the provenance says about the code directory.
type CodeState struct {
	Dir string `json:"dir"`
	// TreeSHA256 digests every file under Dir except .git: the sha256sum-style
	// manifest of regular files, with symlinks recorded by target.
	TreeSHA256 string `json:"treeSha256"`
	Files      int    `json:"files"`
	// Git, when Dir is a git work tree (read from .git, git never runs).
	GitCommit string `json:"gitCommit,omitempty"`
	GitRef    string `json:"gitRef,omitempty"`
	// Dirty: the work tree differs from the index (modified, deleted or
	// untracked files; .gitignore is not applied) or the index has
	// unmerged entries. UncommittedSHA256 digests those changes and the
	// index, so two runs with the same commit and the same uncommitted
	// state have the same digest.
	Dirty             bool     `json:"dirty,omitempty"`
	UncommittedSHA256 string   `json:"uncommittedSha256,omitempty"`
	Changed           []string `json:"changed,omitempty"` // up to 100 "M path", "D path", "? path", "U path", "S index staged"
	// Staged is "staged" when the index differs from HEAD's tree (changes
	// added but not committed), "unknown" when that could not be read
	// (commit stored as a delta, alternates), else empty.
	Staged string `json:"staged,omitempty"`
}
