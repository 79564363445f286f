# Sourced by scripts/*.sh: the pinned versions (internal/versions/versions.env,
# the one place they are written) and where the built tools are cached.
. "$(dirname "${BASH_SOURCE[0]}")/../internal/versions/versions.env"
TOOLS_DIR=${SECURETRAIN_TOOLS:-/var/cache/securetrain/tools}
# The pinned runsc's name in the tools cache (internal/versions.RunscTool).
RUNSC_TOOL="runsc-$GVISOR_VERSION-$RUNSC_BUILD"
