package app

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strconv"
	"strings"

	vault "github.com/hashicorp/vault/api"
	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/oms"
	"github.com/securetrain/securetrain/signing"
)

// KeygenCommand is `securetrain keygen --out PREFIX`: a new ed25519 signing
// key (PREFIX, mode 0600) and its public key (PREFIX.pub). With
// --from-transit NAME:VERSION it only writes the public key of a Vault
// transit key to --out, for verifiers.
var KeygenCommand = &cli.Command{
	Name:  "keygen",
	Usage: "create a provenance signing key, or export a transit public key",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true, Usage: "private key `PATH` (public key: PATH.pub); with --from-transit, the public key file"},
		&cli.StringFlag{Name: "from-transit", Usage: "export Vault transit key `NAME:VERSION` (uses VAULT_ADDR, VAULT_TOKEN)"},
		&cli.StringFlag{Name: "transit-mount", Value: "transit", Usage: "transit engine mount `PATH`"},
		&cli.BoolFlag{Name: "ecdsa", Usage: "an ECDSA P-256 key instead (for integrity.oms_key: OMS verifiers such as model_signing take EC keys only)"},
	},
	Action: func(c *cli.Context) error {
		out := c.String("out")
		if tk := c.String("from-transit"); tk != "" {
			name, ver, _ := strings.Cut(tk, ":")
			v, _ := strconv.Atoi(ver)
			client, err := vault.NewClient(vault.DefaultConfig())
			if err != nil {
				return cli.Exit("keygen: "+err.Error(), 2)
			}
			pub, v, err := signing.TransitPublicKey(c.Context, client, c.String("transit-mount"), name, v)
			if err != nil {
				return cli.Exit("keygen: "+err.Error(), 1)
			}
			b, err := signing.MarshalPublicKeyPEM(pub)
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return cli.Exit("keygen: "+err.Error(), 1)
			}
			if _, err := f.Write(b); err != nil {
				f.Close()
				return cli.Exit("keygen: "+err.Error(), 1)
			}
			if err := f.Close(); err != nil {
				return cli.Exit("keygen: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s: transit key %s version %d, %s\n", out, name, v, signing.KeyID(pub))
			return nil
		}
		if c.Bool("ecdsa") {
			hint, err := generateECKeyFiles(out, out+".pub")
			if err != nil {
				return cli.Exit("keygen: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s, %s.pub: ECDSA P-256, OMS key hint %s\n", out, out, hint)
			return nil
		}
		pub, err := signing.GenerateKeyFiles(out, out+".pub")
		if err != nil {
			return cli.Exit("keygen: "+err.Error(), 1)
		}
		fmt.Fprintf(c.App.Writer, "%s, %s.pub: %s\n", out, out, signing.KeyID(pub))
		return nil
	},
}

// generateECKeyFiles writes a new ECDSA P-256 key pair (PKCS#8 private key
// mode 0600, PKIX public key 0644); neither file may exist.
func generateECKeyFiles(privPath, pubPath string) (string, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		return "", err
	}
	for _, f := range []struct {
		path string
		b    []byte
		mode os.FileMode
	}{{privPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600}, {pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644}} {
		w, err := os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err != nil {
			return "", err
		}
		_, err = w.Write(f.b)
		if cerr := w.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", err
		}
	}
	return oms.KeyHint(k.Public())
}
