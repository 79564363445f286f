package app

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"
	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/provenance"
	"github.com/securetrain/securetrain/signing"
)

// VerifyCommand is `securetrain verify ATTESTATION --key PUBKEY [--outputs
// DIR]`: check a provenance attestation's signature against a key the
// verifier trusts (a PEM file, or a Vault transit key and version read with
// VAULT_ADDR/VAULT_TOKEN), and that the outputs are the recorded ones. An
// OMS bundle (a model signature, e.g. outputs.sig or model.sig) is checked
// against --key or --ca/--identity and, with --model, the model's files.
var VerifyCommand = &cli.Command{
	Name:      "verify",
	Usage:     "verify a signed provenance attestation and the outputs it names, or an OMS model signature and the model",
	ArgsUsage: "ATTESTATION|BUNDLE",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "key", Usage: "trusted public key `FILE` (PEM; ed25519, or ECDSA for OMS bundles)"},
		&cli.StringFlag{Name: "model", Usage: "OMS: check the model `PATH` (directory or file) against the bundle"},
		&cli.StringFlag{Name: "ca", Usage: "OMS certificate method: trusted CA certificates `FILE` (PEM)"},
		&cli.StringFlag{Name: "identity", Usage: "OMS certificate method: the signer `ID` the certificate must name (e-mail, URI, DNS name or common name)"},
		&cli.StringSliceFlag{Name: "allow-ignored", Usage: "OMS: a `PATH` the signer may leave out (its ignore_paths), repeatable"},
		&cli.StringFlag{Name: "transit-key", Usage: "trusted Vault transit key `NAME:VERSION` (uses VAULT_ADDR, VAULT_TOKEN)"},
		&cli.StringFlag{Name: "transit-mount", Value: "transit", Usage: "transit engine mount `PATH`"},
		&cli.StringFlag{Name: "outputs", Usage: "check the files in `DIR` against the attestation's subjects"},
	},
	Action: func(c *cli.Context) error {
		args, err := positional(c)
		if err != nil {
			return cli.Exit("verify: "+err.Error(), 2)
		}
		if len(args) != 1 {
			return cli.Exit("verify: give exactly one ATTESTATION file", 2)
		}
		att := args[0]
		if isOMSBundle(att) {
			return verifyOMS(c, att)
		}
		pub, err := trustedKey(c)
		if err != nil {
			return cli.Exit("verify: "+err.Error(), 2)
		}
		b, err := readLimited(att, 64<<20)
		if err != nil {
			return cli.Exit("verify: "+err.Error(), 2)
		}
		st, err := provenance.Verify(c.Context, b, pub, c.String("outputs"))
		if err != nil {
			return cli.Exit("verify: "+att+": "+err.Error(), 1)
		}
		md := st.Predicate.RunDetails.Metadata
		fmt.Fprintf(c.App.Writer, "OK: signed by %s; job %s; %d output files", signing.KeyID(pub), md.InvocationID, len(st.Subject))
		if c.String("outputs") != "" {
			fmt.Fprintf(c.App.Writer, " match %s", c.String("outputs"))
		}
		fmt.Fprintln(c.App.Writer)
		reportCode(c.App.Writer, st)
		return nil
	},
}

// reportCode prints the code the run recorded and, as a finding, any change
// made to the host's code directory while the job ran its snapshot.
func reportCode(w io.Writer, st *provenance.Statement) {
	bd := st.Predicate.BuildDefinition
	for _, d := range bd.ResolvedDependencies {
		if d.Name != "code" {
			continue
		}
		when := "at the end of the run"
		if d.Annotations["snapshot"] == "start" {
			when = "at the start (the job ran this snapshot)"
		}
		fmt.Fprintf(w, "code: %s tree sha256 %s %s", strings.TrimPrefix(d.URI, "file://"), d.Digest["sha256"], when)
		if c := d.Digest["gitCommit"]; c != "" {
			fmt.Fprintf(w, "; git commit %s", c)
		}
		if d.Annotations["dirty"] == true {
			fmt.Fprintf(w, "; uncommitted changes: %v", d.Annotations["changed"])
		}
		fmt.Fprintln(w)
	}
	if r := bd.InternalParameters.CodeRecheck; r != "" && r != "unchanged" {
		fmt.Fprintf(w, "FINDING: %s\n", r)
	}
}

func trustedKey(c *cli.Context) (ed25519.PublicKey, error) {
	k, tk := c.String("key"), c.String("transit-key")
	switch {
	case k != "" && tk != "":
		return nil, errors.New("give --key or --transit-key, not both")
	case k != "":
		return signing.LoadPublicKeyFile(k)
	case tk != "":
		name, ver, ok := strings.Cut(tk, ":")
		v, err := strconv.Atoi(ver)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("--transit-key %q: want NAME:VERSION (version >= 1), the version you trust", tk)
		}
		client, err := vault.NewClient(vault.DefaultConfig())
		if err != nil {
			return nil, err
		}
		pub, _, err := signing.TransitPublicKey(c.Context, client, c.String("transit-mount"), name, v)
		return pub, err
	}
	return nil, errors.New("a trusted key is required: --key FILE or --transit-key NAME:VERSION")
}

func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, limit)
	}
	return b, nil
}
