package secrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// Client is the launcher's authenticated connection to Vault. It keeps its own
// token alive (renewing at about a third of its TTL, logging in again when
// renewal is refused or the token nears its max TTL) until Close or until the
// context given to NewClient ends.
type Client struct {
	api *api.Client
	cc  ClientConfig
	log *slog.Logger

	loginMu  sync.Mutex // serialises logins
	mu       sync.Mutex
	secretID string // unwrapped AppRole secret id, memory only
	accessor string
	ttl      time.Duration // current TTL of the launcher's token
	loginTTL time.Duration // its TTL at login: the renewal increment
	renew    bool

	cancel context.CancelFunc
	done   chan struct{}
}

// NewClient validates cc, connects, logs in and starts the renewal loop of the
// launcher's own token. The loop ends with ctx or Close.
func NewClient(ctx context.Context, cc ClientConfig, log *slog.Logger) (*Client, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cc.Validate(); err != nil {
		return nil, err
	}
	cc = cc.withDefaults()
	ac, err := newAPIClient(cc)
	if err != nil {
		return nil, err
	}
	c := &Client{api: ac, cc: cc, log: log.With("component", "secrets")}
	if err := c.login(ctx, true); err != nil {
		return nil, err
	}
	lctx, cancel := context.WithCancel(ctx)
	c.cancel, c.done = cancel, make(chan struct{})
	go c.maintain(lctx)
	return c, nil
}

// newAPIClient builds a Vault client from cc alone: the library's own
// environment handling (VAULT_TOKEN, VAULT_AGENT_ADDR, VAULT_SKIP_VERIFY, ...)
// is overridden so that only what ClientConfig says takes effect.
func newAPIClient(cc ClientConfig) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("%w: vault client defaults: %v", ErrConfig, cfg.Error)
	}
	cfg.Address = cc.Address
	cfg.AgentAddress = ""
	cfg.SRVLookup = false
	cfg.MaxRetries = 2
	cfg.MinRetryWait = 200 * time.Millisecond
	cfg.MaxRetryWait = time.Second
	if err := cfg.ConfigureTLS(&api.TLSConfig{CACert: cc.CACert, ClientCert: cc.ClientCert, ClientKey: cc.ClientKey}); err != nil {
		return nil, fmt.Errorf("%w: vault TLS (ca_cert %q, client_cert %q): %w", ErrConfig, cc.CACert, cc.ClientCert, err)
	}
	ac, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: vault client: %w", ErrConfig, err)
	}
	ac.ClearToken()
	ac.SetNamespace(cc.Namespace)
	return ac, nil
}

// withToken returns a client that talks to the same Vault as c with token.
func (c *Client) withToken(token string) (*api.Client, error) {
	jc, err := c.api.Clone()
	if err != nil {
		return nil, fmt.Errorf("%w: clone vault client: %w", ErrVault, err)
	}
	jc.SetToken(token)
	jc.SetNamespace(c.cc.Namespace)
	return jc, nil
}

// TokenAccessor returns the accessor of the launcher's current token.
func (c *Client) TokenAccessor() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.accessor
}

// Close stops the renewal loop. The launcher's token is left to expire (a
// token given by the operator is not ours to revoke); job tokens are orphans
// and unaffected either way.
func (c *Client) Close() {
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
}

// launcherDo runs fn with the launcher's client. On permission denied (the
// launcher's token was revoked or expired under it) it logs in once more and
// retries, so that revocation and gc work after the launcher lost its token.
func (c *Client) launcherDo(ctx context.Context, fn func(*api.Client) error) error {
	err := fn(c.api)
	if httpStatus(err) != 403 {
		return err
	}
	if lerr := c.login(ctx, false); lerr != nil {
		c.log.Warn("vault login again after permission denied failed", "err", lerr)
		return err
	}
	return fn(c.api)
}

func readFileTrim(what, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s %s: %w", ErrConfig, what, path, errors.Unwrap(err))
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%w: %s %s is empty", ErrConfig, what, path)
	}
	return s, nil
}

// login authenticates with the configured method and installs the token.
// first is true for the login in NewClient: a wrapped AppRole secret id is
// unwrapped only then.
func (c *Client) login(ctx context.Context, first bool) error {
	c.loginMu.Lock()
	defer c.loginMu.Unlock()
	a := c.cc.Auth
	var auth *api.SecretAuth
	var token string
	switch a.Method {
	case MethodToken:
		tok := a.Token
		if a.TokenFile != "" {
			t, err := readFileTrim("token_file", a.TokenFile)
			if err != nil {
				return err
			}
			tok = t
		}
		tc, err := c.withToken(tok)
		if err != nil {
			return err
		}
		s, err := tc.Auth().Token().LookupSelfWithContext(ctx)
		if err != nil {
			return fmt.Errorf("vault login (method token): %w", vaultErr(err))
		}
		accessor, _ := s.Data["accessor"].(string)
		ttl, _ := s.TokenTTL()
		renewable, _ := s.TokenIsRenewable()
		c.mu.Lock()
		c.accessor, c.ttl, c.loginTTL, c.renew = accessor, ttl, ttl, renewable
		c.mu.Unlock()
		c.api.SetToken(tok)
		c.log.Info("vault login", "method", a.Method, "accessor", accessor, "ttl", ttl)
		return nil
	case MethodAppRole:
		sid, err := c.appRoleSecretID(ctx, first)
		if err != nil {
			return err
		}
		auth, err = c.loginWrite(ctx, "auth/"+a.Mount+"/login", map[string]any{"role_id": a.RoleID, "secret_id": sid})
		if err != nil {
			return err
		}
	case MethodJWT:
		jwt, err := readFileTrim("jwt_file", a.JWTFile)
		if err != nil {
			return err
		}
		auth, err = c.loginWrite(ctx, "auth/"+a.Mount+"/login", map[string]any{"role": a.Role, "jwt": jwt})
		if err != nil {
			return err
		}
	case MethodCert:
		data := map[string]any{}
		if a.Role != "" {
			data["name"] = a.Role
		}
		var err error
		auth, err = c.loginWrite(ctx, "auth/"+a.Mount+"/login", data)
		if err != nil {
			return err
		}
	}
	token = auth.ClientToken
	c.mu.Lock()
	c.accessor, c.ttl, c.renew = auth.Accessor, time.Duration(auth.LeaseDuration)*time.Second, auth.Renewable
	c.loginTTL = c.ttl
	c.mu.Unlock()
	c.api.SetToken(token)
	c.log.Info("vault login", "method", a.Method, "mount", a.Mount, "accessor", auth.Accessor, "ttl", time.Duration(auth.LeaseDuration)*time.Second)
	return nil
}

func (c *Client) loginWrite(ctx context.Context, path string, data map[string]any) (*api.SecretAuth, error) {
	lc, err := c.withToken("")
	if err != nil {
		return nil, err
	}
	s, err := lc.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, fmt.Errorf("vault login (method %s, %s): %w", c.cc.Auth.Method, path, vaultErr(err))
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("vault login (method %s, %s): %w: no token in response", c.cc.Auth.Method, path, ErrVault)
	}
	return s.Auth, nil
}

// appRoleSecretID returns the AppRole secret id: read from the file, or, when
// wrapped, unwrapped once from the wrapping token in the file and kept in
// memory for later logins.
func (c *Client) appRoleSecretID(ctx context.Context, first bool) (string, error) {
	a := c.cc.Auth
	c.mu.Lock()
	kept := c.secretID
	c.mu.Unlock()
	if kept != "" {
		return kept, nil
	}
	v, err := readFileTrim("secret_id_file", a.SecretIDFile)
	if err != nil {
		return "", err
	}
	if !a.SecretIDWrapped {
		return v, nil
	}
	if !first {
		return "", fmt.Errorf("approle: wrapped secret id from %s was not kept; restart to unwrap a new one", a.SecretIDFile)
	}
	sid, err := c.unwrapSecretID(ctx, v)
	if err != nil {
		return "", fmt.Errorf("approle: unwrap secret id from %s: %w", a.SecretIDFile, err)
	}
	c.mu.Lock()
	c.secretID = sid
	c.mu.Unlock()
	return sid, nil
}

// unwrapSecretID checks the wrapping token's creation path, then unwraps it.
// A wrapping token that Vault no longer knows was used (or revoked) by
// someone else: that is reported as possible tampering, never retried.
func (c *Client) unwrapSecretID(ctx context.Context, wrapping string) (string, error) {
	a := c.cc.Auth
	lc, err := c.withToken("")
	if err != nil {
		return "", err
	}
	info, err := lc.Logical().WriteWithContext(ctx, "sys/wrapping/lookup", map[string]any{"token": wrapping})
	if err != nil {
		if httpStatus(err) == 400 && vaultSays(err, "wrapping token is not valid or does not exist") {
			return "", ErrWrappingTokenUsed
		}
		return "", vaultErr(err)
	}
	if info == nil {
		return "", ErrWrappingTokenUsed
	}
	cp, _ := info.Data["creation_path"].(string)
	want := "auth/" + a.Mount + "/role/"
	if !strings.HasPrefix(cp, want) || !strings.HasSuffix(cp, "/secret-id") {
		return "", fmt.Errorf("%w: wrapping token was created at %q, want %s<role>/secret-id", ErrWrappingTokenUsed, cp, want)
	}
	wc, err := c.withToken(wrapping)
	if err != nil {
		return "", err
	}
	s, err := wc.Logical().UnwrapWithContext(ctx, "")
	if err != nil {
		if httpStatus(err) == 400 && vaultSays(err, "wrapping token is not valid or does not exist") {
			return "", ErrWrappingTokenUsed
		}
		return "", vaultErr(err)
	}
	if s == nil {
		return "", ErrWrappingTokenUsed
	}
	sid, _ := s.Data["secret_id"].(string)
	if sid == "" {
		return "", fmt.Errorf("%w: wrapped response has no secret_id", ErrVault)
	}
	return sid, nil
}

// renewInterval is about a third of ttl, with ±10% jitter, at least 500ms.
func renewInterval(ttl time.Duration) time.Duration {
	d := ttl / 3
	d += time.Duration((rand.Float64()*0.2 - 0.1) * float64(d))
	return max(d, 500*time.Millisecond)
}

// backoff returns the wait after n consecutive failures (1s, 2s, 4s, ... 30s), jittered.
func backoff(n int) time.Duration {
	d := time.Second << min(n, 5)
	d = min(d, 30*time.Second)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)))
}

// maintain keeps the launcher's token alive: renew-self at ~TTL/3; when the
// token is not renewable, renewal fails, or the renewed TTL is cut short by
// its max TTL, log in again. Errors back off; ctx ends the loop.
func (c *Client) maintain(ctx context.Context) {
	defer close(c.done)
	fails := 0
	for {
		c.mu.Lock()
		ttl, loginTTL, renewable := c.ttl, c.loginTTL, c.renew
		c.mu.Unlock()
		if ttl == 0 && fails == 0 {
			return // a token without expiry (root, periodic without ttl): nothing to do
		}
		wait := renewInterval(ttl)
		if fails > 0 {
			wait = backoff(fails)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if renewable {
			s, err := c.api.Auth().Token().RenewSelfWithContext(ctx, int(loginTTL.Seconds()))
			if err == nil && s != nil && s.Auth != nil {
				got := time.Duration(s.Auth.LeaseDuration) * time.Second
				// Log in again once renewal can no longer give half the
				// normal TTL (the token nears its max TTL); a token given by
				// the operator cannot be replaced, so it just runs out.
				if got >= loginTTL/2 || (c.cc.Auth.Method == MethodToken && got > 0) {
					c.mu.Lock()
					c.ttl = got
					c.mu.Unlock()
					fails = 0
					c.log.Debug("vault token renewed", "accessor", c.TokenAccessor(), "ttl", got)
					continue
				}
				c.log.Info("vault token near its max TTL, logging in again", "accessor", c.TokenAccessor(), "ttl", got)
			} else if err != nil {
				c.log.Warn("vault token renewal failed", "accessor", c.TokenAccessor(), "err", vaultErr(err))
			}
		}
		if err := c.login(ctx, false); err != nil {
			if ctx.Err() != nil {
				return
			}
			fails++
			c.log.Warn("vault login failed, backing off", "method", c.cc.Auth.Method, "err", err, "failures", fails)
			continue
		}
		fails = 0
	}
}
