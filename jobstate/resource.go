// Package jobstate records, before they are created, the host resources a job
// owns (runsc container, netns, veth, nftables table, Vault accessors, ...),
// so that teardown and a later gc can undo them after any kind of crash.
//
// It is a leaf package: every subsystem may import it, it imports nothing of
// the project.
package jobstate

import (
	"fmt"
	"sync"
)

// Resource names one host object a job created or is about to create.
// Kind selects the subsystem that knows how to remove it; Name identifies it
// within that kind; Attrs carries whatever else that subsystem needs to clean
// it up later (never secret values: accessors and lease ids only).
type Resource struct {
	Kind  string            `json:"kind"`
	Name  string            `json:"name"`
	Attrs map[string]string `json:"attrs,omitempty"`
}

func (r Resource) String() string { return fmt.Sprintf("%s %q", r.Kind, r.Name) }

// Recorder persists a Resource before the caller creates it. An error means
// the record could not be made durable, and the caller must not create the
// resource (security fails closed; nothing may be created that gc cannot find).
type Recorder interface {
	Record(Resource) error
}

// MemRecorder is a Recorder that keeps records in memory, for tests and for
// callers that persist them elsewhere.
type MemRecorder struct {
	mu  sync.Mutex
	Res []Resource
}

// Record implements Recorder.
func (m *MemRecorder) Record(r Resource) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Res = append(m.Res, r)
	return nil
}

// Snapshot returns a copy of the records so far.
func (m *MemRecorder) Snapshot() []Resource {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Resource(nil), m.Res...)
}
