package secrets

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/api"
)

// Sentinel errors; branch with errors.Is. Messages never carry secret values.
var (
	ErrUnreachable       = errors.New("vault unreachable")
	ErrPermissionDenied  = errors.New("permission denied")
	ErrNotFound          = errors.New("not found")
	ErrFieldMissing      = errors.New("field missing")
	ErrUnmapped          = errors.New("secret maps no field to a file or env var")
	ErrWrappingTokenUsed = errors.New("wrapping token already used: possible tampering")
	ErrVault             = errors.New("vault error")
	ErrRevokeUnverified  = errors.New("revocation not verified")
)

// SecretError names the secret path a failure is about.
type SecretError struct {
	Path string
	Err  error
}

func (e *SecretError) Error() string { return fmt.Sprintf("secret %q: %v", e.Path, e.Err) }
func (e *SecretError) Unwrap() error { return e.Err }

// vaultErr turns an error from the Vault client into one line wrapping one of
// the sentinels. Vault's own messages are kept (they never echo request
// bodies), URLs and multi-line formatting are not.
func vaultErr(err error) error {
	if err == nil {
		return nil
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg := oneLine(re.Errors)
		switch re.StatusCode {
		case 403:
			return ErrPermissionDenied
		case 404:
			return ErrNotFound
		}
		if msg == "" {
			return fmt.Errorf("%w: HTTP %d", ErrVault, re.StatusCode)
		}
		return fmt.Errorf("%w: HTTP %d: %s", ErrVault, re.StatusCode, msg)
	}
	var op *net.OpError
	if errors.As(err, &op) {
		addr := ""
		if op.Addr != nil {
			addr = " at " + op.Addr.String()
		}
		return fmt.Errorf("%w%s: %s: %w", ErrUnreachable, addr, op.Op, op.Err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%w: %w", ErrUnreachable, ue.Err)
	}
	if errors.Is(err, ErrUnreachable) || errors.Is(err, ErrVault) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrVault, err)
}

// oneLine flattens Vault's error list ("1 error occurred:\n\t* x\n\n").
func oneLine(errs []string) string {
	var parts []string
	for _, e := range errs {
		for _, l := range strings.Split(e, "\n") {
			l = strings.TrimSpace(l)
			l = strings.TrimPrefix(l, "* ")
			if l == "" || strings.HasSuffix(l, "error occurred:") || strings.HasSuffix(l, "errors occurred:") {
				continue
			}
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

// httpStatus returns the HTTP status of a Vault response error, or 0.
func httpStatus(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// vaultSays reports whether Vault's response error contains msg.
func vaultSays(err error, msg string) bool {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return strings.Contains(strings.Join(re.Errors, " "), msg)
	}
	return false
}
