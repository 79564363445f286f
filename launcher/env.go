package launcher

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/securetrain/securetrain/configs"
)

// passedEnv are the caller's variables a job may see without declaring them.
// Everything else of the caller's environment is dropped: VAULT_*, proxies,
// LD_PRELOAD, cloud credentials, SSH agents.
var passedEnv = map[string]bool{
	"LANG": true, "LANGUAGE": true, "TZ": true, "TERM": true, "COLORTERM": true,
	"NO_COLOR": true, "FORCE_COLOR": true, "CLICOLOR": true, "CLICOLOR_FORCE": true,
	"PYTHONUNBUFFERED": true, "PYTHONDONTWRITEBYTECODE": true, "PYTHONHASHSEED": true,
	"PYTHONIOENCODING": true, "PYTHONUTF8": true, "PYTHONFAULTHANDLER": true,
	"PYTHONWARNINGS": true, "PYTHONPATH": true, "PYTHONOPTIMIZE": true,
	"TORCH_SHOW_CPP_STACKTRACES": true, "CUBLAS_WORKSPACE_CONFIG": true,
	"TF_CPP_MIN_LOG_LEVEL": true, "TF_ENABLE_ONEDNN_OPTS": true,
	"HF_HUB_OFFLINE": true, "TRANSFORMERS_OFFLINE": true, "HF_DATASETS_OFFLINE": true,
	"WANDB_MODE": true, "WANDB_PROJECT": true, "MLFLOW_EXPERIMENT_NAME": true,
	"OMP_NUM_THREADS": true, "MKL_NUM_THREADS": true, "OPENBLAS_NUM_THREADS": true,
	"NUMEXPR_NUM_THREADS": true, "VECLIB_MAXIMUM_THREADS": true, "BLIS_NUM_THREADS": true,
	"TF_NUM_INTRAOP_THREADS": true, "TF_NUM_INTEROP_THREADS": true,
}

// ThreadVars are set from limits.cpus unless the user set them: OpenMP, the
// BLAS libraries, numexpr and TensorFlow's intra/inter-op pools.
var ThreadVars = []string{
	"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
	"VECLIB_MAXIMUM_THREADS", "BLIS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
}

// MallocVars are glibc malloc's settings that the launcher fills in (see
// mallocEnv) unless the caller, the profile or --env set any of them or
// GLIBC_TUNABLES.
var MallocVars = []string{"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"}

// mallocMmapThreshold is the largest mmap threshold glibc accepts on 64-bit
// (half its 64 MiB arena heap; a larger value is silently ignored).
const mallocMmapThreshold = 32 << 20

// mallocEnv returns the glibc malloc settings a job gets by default, which
// keep freed memory in the process for the next allocation instead of
// handing it back to the kernel and faulting it in again: under gVisor each
// fresh page is a fault the sentry handles, several times the cost of a
// native one, and a training step frees and reallocates the same tensors
// every iteration (docs/performance.md has the figures).
//
//   - MALLOC_MMAP_THRESHOLD_ 32 MiB (glibc's maximum, and the ceiling its
//     dynamic threshold reaches anyway): blocks below it come from the heap
//     and are reused; larger ones are still mapped and unmapped.
//   - MALLOC_TRIM_THRESHOLD_ limits.memory/16, at most 1 GiB: free memory at
//     the top of a heap is returned only beyond this.
//   - MALLOC_TOP_PAD_ a sixteenth of that: extra heap asked for at each
//     growth (address space; pages are only charged when touched).
//
// Bounded: memory is kept only after the job itself used it, and every
// heap (glibc keeps one per thread arena) holds at most trim + top pad of
// free memory beyond what the job still uses, a sixteenth of the memory
// limit plus a little; the limit itself is unchanged and still enforced.
// Nothing is set when the job's environment already names any of these
// variables or GLIBC_TUNABLES: the profile's env.set (or --env) decides,
// e.g. MALLOC_TRIM_THRESHOLD_=131072 restores glibc's own behaviour.
func mallocEnv(env map[string]string, memory uint64) map[string]string {
	if _, ok := env["GLIBC_TUNABLES"]; ok {
		return nil
	}
	for _, k := range MallocVars {
		if _, ok := env[k]; ok {
			return nil
		}
	}
	const minTrim, maxTrim = 16 << 20, 1 << 30
	trim := uint64(maxTrim)
	if memory > 0 {
		trim = min(max(memory/16, minTrim), maxTrim)
	}
	return map[string]string{
		"MALLOC_MMAP_THRESHOLD_": strconv.FormatUint(min(mallocMmapThreshold, trim), 10),
		"MALLOC_TRIM_THRESHOLD_": strconv.FormatUint(trim, 10),
		"MALLOC_TOP_PAD_":        strconv.FormatUint(trim/16, 10),
	}
}

// launcherOwned are set only by the launcher, from the GPUs it gives the job:
// nvproxy reads NVIDIA_DRIVER_CAPABILITIES from the spec.
var launcherOwned = map[string]bool{"NVIDIA_DRIVER_CAPABILITIES": true}

var envNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// envInput is what buildEnv reads.
type envInput struct {
	caller    map[string]string
	profile   configs.Env
	flags     []string // --env K=V
	path      string
	home      string
	user      string
	cpus      float64
	memory    uint64   // limits.memory, bytes; bounds the malloc defaults
	gpuCaps   []string // nil: no GPU
	gpuLibDir []string
	extra     map[string]string // set by subsystems (netguard's distributed-training variables)
}

// buildEnv builds the job's environment from the allowlist. The result is
// sorted KEY=VALUE; it never holds a forbidden name.
func buildEnv(in envInput) ([]string, error) {
	env := map[string]string{}
	for k, v := range in.caller {
		if passedEnv[k] || strings.HasPrefix(k, "LC_") {
			env[k] = v
		}
	}
	for _, k := range in.profile.Pass {
		if v, ok := in.caller[k]; ok {
			env[k] = v
		}
	}
	for k, v := range in.profile.Set {
		env[k] = v
	}
	for _, kv := range in.flags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--env %q: want NAME=VALUE", kv)
		}
		if !envNameRE.MatchString(k) {
			return nil, fmt.Errorf("--env %q: %q is not a valid variable name (letters, digits and _, not starting with a digit)", kv, k)
		}
		if configs.IsForbiddenEnv(k) {
			return nil, fmt.Errorf("--env %s: this variable may never be passed to a job (launcher credentials, loader injection or unsafe model loading)", k)
		}
		if launcherOwned[k] {
			return nil, fmt.Errorf("--env %s: set by the launcher (from gpu.capabilities and the GPU libraries it mounts), not by the caller", k)
		}
		env[k] = v
	}
	n := strconv.Itoa(threadCount(in.cpus))
	for _, k := range ThreadVars {
		if _, ok := env[k]; !ok {
			env[k] = n
		}
	}
	if _, ok := env["TF_NUM_INTEROP_THREADS"]; !ok {
		env["TF_NUM_INTEROP_THREADS"] = strconv.Itoa(min(2, threadCount(in.cpus)))
	}
	for k, v := range mallocEnv(env, in.memory) {
		env[k] = v
	}
	for k, v := range in.extra {
		env[k] = v
	}
	for k := range env {
		// Never from the caller, the profile or a subsystem: the launcher
		// sets these below from what it found and mounted.
		if configs.IsForbiddenEnv(k) || launcherOwned[k] {
			delete(env, k)
		}
	}
	if in.gpuCaps != nil {
		env["NVIDIA_DRIVER_CAPABILITIES"] = strings.Join(in.gpuCaps, ",")
		if len(in.gpuLibDir) > 0 {
			// The driver libraries the launcher found and mounted; never the
			// caller's LD_LIBRARY_PATH.
			env["LD_LIBRARY_PATH"] = strings.Join(in.gpuLibDir, ":")
		}
	}
	env["PATH"] = in.path
	env["HOME"] = in.home
	env["USER"] = in.user
	env["LOGNAME"] = in.user
	env["SHELL"] = "/bin/sh"
	if _, ok := env["PYTHONUNBUFFERED"]; !ok {
		// Output streams live through the launcher's pipe.
		env["PYTHONUNBUFFERED"] = "1"
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out, nil
}

// envMap turns KEY=VALUE pairs into a map.
func envMap(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, s := range kv {
		if k, v, ok := strings.Cut(s, "="); ok {
			m[k] = v
		}
	}
	return m
}
