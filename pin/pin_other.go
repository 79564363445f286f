//go:build !linux

package pin

import (
	"context"
	"errors"
	"log/slog"
	"os"
)

// ErrUnsupported: verification needs Linux (openat2 RESOLVE_BENEATH).
var ErrUnsupported = errors.New("pin: input verification needs Linux")

type Options struct {
	Workers int
	Cache   *Cache
	Logger  *slog.Logger
}
type Stats struct {
	Files, Hashed, Cached int
	Bytes, HashedBytes    int64
}
type Pin struct {
	Path       string
	Dir        bool
	Digest     Digest
	Manifest   []Entry
	Ignore     []string
	NoSymlinks bool
}
type Snapshot struct{}
type Result struct {
	Stats    Stats
	Snapshot *Snapshot
}
type Verifier struct{}
type Cache struct{}

func New(Options) *Verifier                             { return &Verifier{} }
func OpenCache(string) (*Cache, error)                  { return nil, ErrUnsupported }
func Manifest(context.Context, string) ([]Entry, error) { return nil, ErrUnsupported }
func (*Verifier) Manifest(context.Context, string) ([]Entry, Stats, error) {
	return nil, Stats{}, ErrUnsupported
}
func (*Verifier) Verify(context.Context, Pin) (Result, error)      { return Result{}, ErrUnsupported }
func (*Verifier) VerifyAll(context.Context, []Pin) (Result, error) { return Result{}, ErrUnsupported }
func Recheck(context.Context, *Snapshot) error                     { return ErrUnsupported }
func HashFile(context.Context, *os.File) (Digest, error)           { return Digest{}, ErrUnsupported }
