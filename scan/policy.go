package scan

import (
	"errors"
	"fmt"
)

// ErrRefused is wrapped by ModelRefusedError.
var ErrRefused = errors.New("model file refused")

// ModelRefusedError is the scan policy's refusal of a model file: it says
// why the model input may not be used.
type ModelRefusedError struct {
	Report *Report
	Digest string // sha256 of the file, for the profile's accept list
}

func (e *ModelRefusedError) Error() string {
	return fmt.Sprintf("model %s is %s (%s); to use it anyway, accept sha256 %s in the profile", e.Report.Path, e.Report.Verdict, e.Report.Summary(), e.Digest)
}

// Unwrap lets errors.Is(err, ErrRefused) match.
func (e *ModelRefusedError) Unwrap() error { return ErrRefused }

// Check applies the launcher's rule to a scanned model input: only Safe
// passes, unless the profile accepts the file's exact digest (accepted).
// Dangerous, malformed and unsupported files are refused otherwise.
func Check(r *Report, sha256 string, accepted func(sha256 string) bool) error {
	if r.Verdict == Safe {
		return nil
	}
	if accepted != nil && sha256 != "" && accepted(sha256) {
		return nil
	}
	return &ModelRefusedError{Report: r, Digest: sha256}
}

// UnsafeEnv lists environment variables that switch PyTorch's safe loading
// off or otherwise make torch.load unpickle arbitrary globals. The launcher
// must never pass them to a job.
var UnsafeEnv = []string{
	"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
	"TORCH_FORCE_WEIGHTS_ONLY_LOAD", // only ever set by the launcher itself, if at all
}
