package app

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/oms"
	"github.com/securetrain/securetrain/pin"
	"github.com/securetrain/securetrain/signing"
)

// isOMSBundle reports whether the file is a Sigstore bundle (an OMS model
// signature) rather than a bare DSSE envelope.
func isOMSBundle(p string) bool {
	b, err := readLimited(p, 64<<20)
	if err != nil {
		return false
	}
	var probe struct {
		MediaType string `json:"mediaType"`
	}
	return json.Unmarshal(b, &probe) == nil && strings.HasPrefix(probe.MediaType, "application/vnd.dev.sigstore.bundle")
}

// verifyOMS is `securetrain verify BUNDLE (--key K | --ca CA --identity ID)
// [--model PATH]`.
func verifyOMS(c *cli.Context, bundle string) error {
	t, err := omsTrust(c)
	if err != nil {
		return cli.Exit("verify: "+err.Error(), 2)
	}
	b, err := readLimited(bundle, 256<<20)
	if err != nil {
		return cli.Exit("verify: "+err.Error(), 2)
	}
	v, err := oms.Verify(b, t)
	if err != nil {
		return cli.Exit("verify: "+bundle+": "+err.Error(), 1)
	}
	msg := fmt.Sprintf("OK: OMS %s signature by %s; root digest sha256:%s; %d files", v.Method, v.Signer, v.RootDigest, len(v.Entries))
	if m := c.String("model"); m != "" {
		real, err := filepath.EvalSymlinks(m)
		if err != nil {
			return cli.Exit("verify: --model: "+err.Error(), 2)
		}
		fi, err := os.Stat(real)
		if err != nil {
			return cli.Exit("verify: --model: "+err.Error(), 2)
		}
		realBundle, _ := filepath.EvalSymlinks(bundle)
		if realBundle, err = filepath.Abs(realBundle); err != nil {
			return cli.Exit("verify: "+err.Error(), 2)
		}
		if real, err = filepath.Abs(real); err != nil {
			return cli.Exit("verify: "+err.Error(), 2)
		}
		p, err := v.Pin(real, fi.IsDir(), realBundle, c.StringSlice("allow-ignored"))
		if err != nil {
			return cli.Exit("verify: "+bundle+": "+err.Error(), 1)
		}
		if _, err := pin.New(pin.Options{}).Verify(c.Context, p); err != nil {
			return cli.Exit("verify: "+m+" does not match "+bundle+": "+strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; "), 1)
		}
		msg += " match " + m
	}
	fmt.Fprintln(c.App.Writer, msg)
	return nil
}

// omsTrust is the trust an OMS bundle is verified with: --key (ed25519 or
// ECDSA PEM; or --transit-key), or --ca with --identity.
func omsTrust(c *cli.Context) (oms.Trust, error) {
	var t oms.Trust
	ca, id := c.String("ca"), c.String("identity")
	switch {
	case ca != "" && (c.String("key") != "" || c.String("transit-key") != ""):
		return t, errors.New("give --key or --ca, not both")
	case ca != "":
		if id == "" {
			return t, errors.New("--ca needs --identity: the signer the certificate must name")
		}
		b, err := signing.ReadKeyFile(ca, false)
		if err != nil {
			return t, err
		}
		certs, err := oms.ParseCertificates(b)
		if err != nil {
			return t, fmt.Errorf("--ca %s: %w", ca, err)
		}
		t.Roots = x509.NewCertPool()
		for _, c := range certs {
			t.Roots.AddCert(c)
		}
		t.Identities = []string{id}
		return t, nil
	case id != "":
		return t, errors.New("--identity goes with --ca")
	case c.String("key") != "":
		b, err := signing.ReadKeyFile(c.String("key"), false)
		if err != nil {
			return t, err
		}
		t.Key, err = oms.ParsePublicKey(b)
		if err != nil {
			return t, fmt.Errorf("--key %s: %w", c.String("key"), err)
		}
		return t, nil
	}
	pub, err := trustedKey(c)
	if err != nil {
		return t, fmt.Errorf("%w (or --ca FILE --identity ID)", err)
	}
	t.Key = pub
	return t, nil
}
