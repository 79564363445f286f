// Package secrets gives a training job short-lived credentials from HashiCorp
// Vault: it logs the launcher in, creates an orphan job token through a token
// role, reads the profile's secrets with it, delivers each field as a file on
// an in-memory mount (and, through a small map file, as environment
// variables set inside the sandbox), renews the token and leases while the
// job runs, and revokes them when it ends or, after a crash, by accessor.
//
// The launcher's own token never leaves this package; the job token never
// leaves the launcher; secret values never appear in logs, errors or records.
//
// What a site's Vault needs (internal/testenv.SetupVault and
// scripts/start-vault.sh build exactly this):
//   - a token role, e.g. auth/token/roles/securetrain-job, with orphan=true,
//     renewable=true, allowed_policies = the job policies, and
//     token_explicit_max_ttl as a server-side ceiling: Vault 1.13 caps the
//     renewal of a role-created token by the role's value only, so the
//     per-job MaxTTL is enforced by the launcher, the token's only holder;
//   - a launcher policy: update on auth/token/create/<role>,
//     auth/token/revoke-accessor and auth/token/lookup-accessor (lease
//     renewal and lookup come with Vault's default policy);
//   - job policies that read the profile's paths (KV v2 data paths, database
//     creds); sys/internal/ui/mounts needs no grant.
package secrets

import (
	"errors"
	"fmt"
	"net/url"
	"os"
)

// Auth methods the launcher can log in with.
const (
	MethodToken   = "token"
	MethodAppRole = "approle"
	MethodJWT     = "jwt"
	MethodCert    = "cert"
)

// ClientConfig says how the launcher reaches and authenticates to Vault.
type ClientConfig struct {
	Address    string // e.g. https://vault.example:8200
	CACert     string // PEM file with the CA that signed Vault's certificate
	ClientCert string // PEM client certificate (TLS cert auth, or mTLS listeners)
	ClientKey  string // PEM key of ClientCert
	Namespace  string // Vault Enterprise namespace; empty for the root namespace
	Auth       Auth
}

// Auth says how the launcher logs in.
type Auth struct {
	// Method is one of token, approle, jwt, cert. Empty means token.
	Method string
	// Token is the token value itself; only ClientConfigFromEnv sets it (from
	// VAULT_TOKEN). Host configuration files name a TokenFile instead.
	Token string
	// TokenFile holds the launcher's token (method token).
	TokenFile string
	// RoleID and SecretIDFile are the AppRole credentials. With
	// SecretIDWrapped, the file holds a response-wrapping token that is
	// unwrapped exactly once; an already-used wrapping token is reported as
	// possible tampering.
	RoleID          string
	SecretIDFile    string
	SecretIDWrapped bool
	// JWTFile holds a JWT (for example a Slurm job JWT), re-read at each login.
	JWTFile string
	// Role is the role for jwt login, or the certificate role name for cert
	// (optional there).
	Role string
	// Mount is where the auth method is mounted; defaults to the method name.
	Mount string
}

// ClientConfigFromEnv reads the Vault CLI's environment variables, as
// operators expect: VAULT_ADDR, VAULT_TOKEN, VAULT_CACERT, VAULT_NAMESPACE,
// VAULT_CLIENT_CERT, VAULT_CLIENT_KEY. None of them is passed to a job.
func ClientConfigFromEnv() ClientConfig {
	cc := ClientConfig{
		Address:    os.Getenv("VAULT_ADDR"),
		CACert:     os.Getenv("VAULT_CACERT"),
		ClientCert: os.Getenv("VAULT_CLIENT_CERT"),
		ClientKey:  os.Getenv("VAULT_CLIENT_KEY"),
		Namespace:  os.Getenv("VAULT_NAMESPACE"),
	}
	if tok := os.Getenv("VAULT_TOKEN"); tok != "" {
		cc.Auth = Auth{Method: MethodToken, Token: tok}
	}
	return cc
}

// Merge returns base overridden by the non-empty fields of over: the host
// configuration file (over) wins over the environment (base). Auth is taken
// whole from over when over names a method, so that fields of two methods are
// never mixed.
func Merge(base, over ClientConfig) ClientConfig {
	out := base
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&out.Address, over.Address)
	set(&out.CACert, over.CACert)
	set(&out.ClientCert, over.ClientCert)
	set(&out.ClientKey, over.ClientKey)
	set(&out.Namespace, over.Namespace)
	if over.Auth.Method != "" || over.Auth.TokenFile != "" {
		out.Auth = over.Auth
	}
	return out
}

// ErrConfig marks an invalid ClientConfig or JobSpec.
var ErrConfig = errors.New("invalid secrets configuration")

func configErr(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
}

// withDefaults fills in the defaults in one place.
func (cc ClientConfig) withDefaults() ClientConfig {
	if cc.Auth.Method == "" {
		cc.Auth.Method = MethodToken
	}
	if cc.Auth.Mount == "" {
		cc.Auth.Mount = cc.Auth.Method
	}
	return cc
}

// Validate checks the configuration without touching the network.
func (cc ClientConfig) Validate() error {
	cc = cc.withDefaults()
	if cc.Address == "" {
		return configErr("vault.address", "required (or set VAULT_ADDR)")
	}
	u, err := url.Parse(cc.Address)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return configErr("vault.address", "%q is not an http(s) URL", cc.Address)
	}
	if (cc.ClientCert == "") != (cc.ClientKey == "") {
		return configErr("vault.client_cert", "client_cert and client_key go together")
	}
	a := cc.Auth
	switch a.Method {
	case MethodToken:
		if a.Token == "" && a.TokenFile == "" {
			return configErr("vault.auth.token_file", "required for method token (or set VAULT_TOKEN)")
		}
	case MethodAppRole:
		if a.RoleID == "" {
			return configErr("vault.auth.role_id", "required for method approle")
		}
		if a.SecretIDFile == "" {
			return configErr("vault.auth.secret_id_file", "required for method approle")
		}
	case MethodJWT:
		if a.JWTFile == "" {
			return configErr("vault.auth.jwt_file", "required for method jwt")
		}
		if a.Role == "" {
			return configErr("vault.auth.role", "required for method jwt")
		}
	case MethodCert:
		if cc.ClientCert == "" {
			return configErr("vault.client_cert", "required for method cert")
		}
	default:
		return configErr("vault.auth.method", "%q is not one of token, approle, jwt, cert", a.Method)
	}
	return nil
}
