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
