// Package sandbox writes a job's OCI bundle (host-minimal root, mounts,
// devices, resources, user) and drives the pinned runsc that runs it.
//
// It knows runsc and OCI and nothing else of the project: it never imports
// netguard, secrets or the launcher.
package sandbox
