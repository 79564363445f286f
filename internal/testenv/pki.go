package testenv

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"
)

// PKI is a test certificate authority: a root CA, an intermediate CA and a
// leaf certificate for signing (ECDSA P-256 throughout), as a model
// publisher's CA would issue it.
type PKI struct {
	Root, Inter, Leaf *x509.Certificate
	LeafKey           *ecdsa.PrivateKey
	Roots             *x509.CertPool
}

// P256 is a fresh ECDSA P-256 key.
func P256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serial atomic.Int64

func certTemplate(cn string, ca bool) *x509.Certificate {
	c := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1)), Subject: pkix.Name{CommonName: cn, Organization: []string{"securetrain tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour), BasicConstraintsValid: true, IsCA: ca,
	}
	if ca {
		c.KeyUsage = x509.KeyUsageCertSign
	} else {
		c.KeyUsage = x509.KeyUsageDigitalSignature
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
	}
	return c
}

func issue(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// NewPKI issues root -> intermediate -> leaf; the leaf names email and
// https://publisher.example/models. mut, if set, changes the leaf's
// template before it is issued.
func NewPKI(t testing.TB, email string, mut func(*x509.Certificate)) *PKI {
	t.Helper()
	rk, ik := P256(t), P256(t)
	p := &PKI{LeafKey: P256(t)}
	rt := certTemplate("Test Root CA", true)
	p.Root = issue(t, rt, rt, rk.Public(), rk)
	p.Inter = issue(t, certTemplate("Test Intermediate CA", true), p.Root, ik.Public(), rk)
	lt := certTemplate("model publisher", false)
	lt.EmailAddresses = []string{email}
	u, _ := url.Parse("https://publisher.example/models")
	lt.URIs = []*url.URL{u}
	if mut != nil {
		mut(lt)
	}
	p.Leaf = issue(t, lt, p.Inter, p.LeafKey.Public(), ik)
	p.Roots = x509.NewCertPool()
	p.Roots.AddCert(p.Root)
	return p
}
