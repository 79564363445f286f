// Package configs defines securetrain's profile and host-configuration
// formats: types, strict loading (unknown fields and wrong types are errors
// naming the field), defaults filled in one place, and validation that runs
// completely before any side effect. It also ships the example profiles.
//
// It is pure data: it imports nothing of the project.
package configs
