#!/usr/bin/env bash
# Runs the sample training job (examples/train.py) under the default profile.
# Run as root (sudo make demo): the job runs as the sudo caller, or as a
# dedicated unprivileged demo user when there is none.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin/securetrain"
if [ -n "${SUDO_USER:-}" ] && [ "${SUDO_USER}" != root ]; then
  user=$SUDO_USER
else
  user=securetrain-demo
  id "$user" >/dev/null 2>&1 || useradd --system --create-home --shell /usr/sbin/nologin "$user"
fi
work=$(mktemp -d /tmp/securetrain-demo.XXXXXX)
cp "$here/examples/train.py" "$work/"
chown -R "$user" "$work"
chmod 755 "$work"
cd "$work"
echo "+ cd $work && securetrain run --user $user --profile default -- /usr/bin/python3 train.py" >&2
"$bin" run --user "$user" --profile default -- /usr/bin/python3 train.py
echo "checkpoint: $(ls -l "$work/outputs/model.pt")" >&2
