//go:build !unix

package signing

const (
	noFollow = 0
	nonBlock = 0
)
