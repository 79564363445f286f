package provenance

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/signing"
)

// Build collects the code state, Python distributions and output digests
// and returns the Statement for run. It reads; it never runs anything from
// the job's directories.
func Build(ctx context.Context, run Run) (*Statement, error) {
	st := &Statement{Type: StatementType, PredicateType: PredicateType, Subject: []ResourceDescriptor{}}
	if run.OutputsDir != "" {
		outs, skipped, err := HashOutputs(ctx, run.OutputsDir)
		if err != nil {
			return nil, err
		}
		for _, e := range outs {
			st.Subject = append(st.Subject, ResourceDescriptor{Name: e.Path, Digest: map[string]string{"sha256": e.Digest.String()}})
		}
		st.Predicate.BuildDefinition.InternalParameters.OutputsSkipped = skipped
	}
	bd := &st.Predicate.BuildDefinition
	bd.BuildType = BuildType
	bd.ExternalParameters = ExternalParameters{Command: append([]string{}, run.Command...), Profile: run.Profile}
	ip := &bd.InternalParameters
	ip.RunscVersion, ip.GPUDriver, ip.ExitCode = run.RunscVersion, run.GPUDriver, run.ExitCode
	ip.InputsRecheck = "unchanged"
	if run.InputsRecheck != nil {
		ip.InputsRecheck = run.InputsRecheck.Error()
	}
	bd.ResolvedDependencies = []ResourceDescriptor{}
	if run.CodeDir != "" || run.Code != nil {
		var cs CodeState
		if run.Code != nil {
			cs = *run.Code
		} else {
			c, err := CodeStateOf(ctx, run.CodeDir)
			if err != nil {
				return nil, err
			}
			cs = c
		}
		rd := ResourceDescriptor{Name: "code", URI: "file://" + cs.Dir, Digest: map[string]string{"sha256": cs.TreeSHA256},
			Annotations: map[string]any{"files": cs.Files}}
		if run.Code != nil {
			// Taken before the job started, from the copy it ran.
			rd.Annotations["snapshot"] = "start"
			ip.CodeRecheck = "unchanged"
			if len(run.CodeChanges) > 0 {
				ip.CodeRecheck = CodeChangedFinding(run.CodeChanges)
				rd.Annotations["changedOnHostDuringRun"] = run.CodeChanges
			}
		}
		if cs.GitCommit != "" {
			rd.Digest["gitCommit"] = cs.GitCommit
		}
		if cs.GitRef != "" {
			rd.Annotations["gitRef"] = cs.GitRef
		}
		if cs.Staged != "" {
			rd.Annotations["staged"] = cs.Staged
		}
		if cs.Dirty {
			rd.Annotations["dirty"] = true
			rd.Annotations["uncommittedSha256"] = cs.UncommittedSHA256
			rd.Annotations["changed"] = cs.Changed
		}
		bd.ResolvedDependencies = append(bd.ResolvedDependencies, rd)
	}
	for _, in := range run.Inputs {
		kind := "file"
		if in.Dir {
			kind = "directory (sha256 of its sha256sum manifest)"
		}
		rd := ResourceDescriptor{
			Name: "input:" + in.Name, URI: "file://" + in.Path,
			Digest: map[string]string{"sha256": in.SHA256}, Annotations: map[string]any{"kind": kind}}
		if in.Signature != nil {
			rd.Annotations["omsSignature"] = in.Signature
		}
		bd.ResolvedDependencies = append(bd.ResolvedDependencies, rd)
	}
	if len(run.SitePackages) > 0 {
		dists, sum, err := Distributions(ctx, run.SitePackages)
		if err != nil {
			return nil, err
		}
		ip.PythonDistsSHA256 = sum
		for _, d := range dists {
			bd.ResolvedDependencies = append(bd.ResolvedDependencies, ResourceDescriptor{
				Name: "python:" + d.Name, URI: "pkg:pypi/" + strings.ToLower(d.Name) + "@" + d.Version,
				Digest: map[string]string{"sha256": d.Metadata}, Annotations: map[string]any{"dir": d.Dir}})
		}
	}
	rd := &st.Predicate.RunDetails
	rd.Builder = Builder{ID: run.BuilderID, Version: run.Version}
	rd.Metadata = Metadata{InvocationID: run.JobID, StartedOn: run.StartedOn.UTC(), FinishedOn: run.FinishedOn.UTC()}
	dests := append([]string{}, run.Destinations...)
	sort.Strings(dests)
	rd.Byproducts = []ResourceDescriptor{
		{Name: "network", Annotations: map[string]any{"destinations": dests}},
		{Name: "violations", Annotations: map[string]any{"violations": nonNil(run.Violations)}},
	}
	if len(run.Usage) > 0 {
		if !json.Valid(run.Usage) {
			return nil, errors.New("provenance: usage record is not valid JSON")
		}
		rd.Byproducts = append(rd.Byproducts, ResourceDescriptor{Name: "usage", MediaType: "application/json",
			Annotations: map[string]any{"record": run.Usage}})
	}
	n := len(rd.Byproducts)
	if ms := run.OutputsSignature; ms != nil {
		// The OMS bundle of the outputs, by its own digest.
		rd.Byproducts = append(rd.Byproducts, ResourceDescriptor{Name: "oms-signature", URI: "file://" + ms.Bundle,
			MediaType: "application/vnd.dev.sigstore.bundle.v0.3+json", Digest: map[string]string{"sha256": ms.BundleSHA256},
			Annotations: map[string]any{"method": ms.Method, "signer": ms.Signer, "rootDigest": ms.RootDigest}})
	}
	// A resource descriptor needs a uri, digest or content: digest what
	// each byproduct records.
	for i := range rd.Byproducts[:n] {
		b, err := json.Marshal(rd.Byproducts[i].Annotations)
		if err != nil {
			return nil, fmt.Errorf("provenance: byproduct %s: %w", rd.Byproducts[i].Name, err)
		}
		sum := sha256.Sum256(b)
		rd.Byproducts[i].Digest = map[string]string{"sha256": hex.EncodeToString(sum[:])}
	}
	return st, nil
}

// CodeChangedFinding is the one-line finding for changes made to the
// host's code directory while a job ran its snapshot.
func CodeChangedFinding(changes []string) string {
	return fmt.Sprintf("%d change(s) to the code directory on the host during the run (the job ran the start-time snapshot): %s",
		len(changes), strings.Join(changes, ", "))
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// Sign returns the DSSE envelope of st, serialized as JSON.
func Sign(ctx context.Context, st *Statement, s signing.Signer) ([]byte, error) {
	payload, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	env, err := signing.SignEnvelope(ctx, s, PayloadType, payload)
	if err != nil {
		return nil, fmt.Errorf("provenance: sign: %w", err)
	}
	b, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Errors of Verify.
var (
	ErrStatement       = errors.New("not a securetrain provenance statement")
	ErrOutputsMismatch = errors.New("outputs differ from the attestation")
)

// OutputsError names every output that differs from the attestation.
type OutputsError struct {
	Changed []string // path: recorded digest != current digest
	Missing []string // recorded, not present (or no longer a regular file)
	Extra   []string // present, not recorded
}

func (e *OutputsError) Error() string {
	var parts []string
	add := func(what string, l []string) {
		if len(l) > 0 {
			parts = append(parts, what+": "+strings.Join(l, ", "))
		}
	}
	add("changed", e.Changed)
	add("missing", e.Missing)
	add("not in attestation", e.Extra)
	return ErrOutputsMismatch.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap lets errors.Is(err, ErrOutputsMismatch) match.
func (e *OutputsError) Unwrap() error { return ErrOutputsMismatch }

// Verify checks the envelope's signature against the trusted key only (the
// envelope's keyid is ignored), that the payload is an in-toto v1 statement
// with SLSA provenance, and, when outputsDir is not empty, that the files
// there are exactly the statement's subjects. It returns the statement.
func Verify(ctx context.Context, envelope []byte, trusted ed25519.PublicKey, outputsDir string) (*Statement, error) {
	env, err := signing.ParseEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	payload, err := signing.VerifyEnvelope(env, trusted, PayloadType)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	var st Statement
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStatement, err)
	}
	if st.Type != StatementType || st.PredicateType != PredicateType || st.Predicate.BuildDefinition.BuildType != BuildType {
		return nil, fmt.Errorf("%w: _type %q, predicateType %q", ErrStatement, st.Type, st.PredicateType)
	}
	if outputsDir == "" {
		return &st, nil
	}
	want := map[string]string{}
	for _, s := range st.Subject {
		d := s.Digest["sha256"]
		if _, err := pin.ParseDigest(d); err != nil || s.Name == "" {
			return nil, fmt.Errorf("%w: subject %q has no sha256 digest", ErrStatement, s.Name)
		}
		want[s.Name] = d
	}
	have, _, err := HashOutputs(ctx, outputsDir)
	if err != nil {
		return nil, err
	}
	oe := &OutputsError{}
	for _, e := range have {
		w, ok := want[e.Path]
		switch {
		case !ok:
			oe.Extra = append(oe.Extra, e.Path)
		case w != e.Digest.String():
			oe.Changed = append(oe.Changed, e.Path)
		}
		delete(want, e.Path)
	}
	for p := range want {
		oe.Missing = append(oe.Missing, p)
	}
	sort.Strings(oe.Missing)
	if len(oe.Changed)+len(oe.Missing)+len(oe.Extra) > 0 {
		return &st, oe
	}
	return &st, nil
}
