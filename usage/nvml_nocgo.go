//go:build !linux || !cgo

package usage

import "fmt"

// newNVML: go-nvml needs cgo; without it GPU figures are absent.
func newNVML() NVML { return noNVML{} }

type noNVML struct{}

func (noNVML) Init() error     { return fmt.Errorf("%w: built without cgo", ErrNoNVML) }
func (noNVML) Shutdown() error { return nil }
func (noNVML) Device(i int) (GPUDevice, error) {
	return nil, fmt.Errorf("%w: built without cgo", ErrNoNVML)
}
