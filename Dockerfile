# securetrain + the pinned static runsc, in one image.
#
# Build:  docker build -t securetrain .
# Run:    the launcher needs root on the host: namespaces, cgroups, mounts,
#         nftables and runsc's own sandboxing. Run it privileged, in the host's
#         network, PID and cgroup namespaces, with the directories it manages
#         shared with the host at the same paths:
#
#   docker run --rm --privileged --network host --pid host --cgroupns host \
#     -v /run/securetrain:/run/securetrain -v /var/lib/securetrain:/var/lib/securetrain \
#     -v /sys/fs/cgroup:/sys/fs/cgroup -v /etc/securetrain:/etc/securetrain:ro \
#     -v "$PWD:$PWD" -w "$PWD" \
#     securetrain run --user "$(id -u)" -- python3 train.py
#
#   The job sees the *image's* system directories (this image is Debian slim
#   with python3; derive from it to add your framework) or, with
#   `sandbox.rootfs: DIR`, a root file system you mount in. For GPUs add
#   --device /dev/nvidiactl --device /dev/nvidia-uvm --device /dev/nvidia0 ...
#   and mount the driver's libraries (/usr/local/nvidia) read-only.
#   Prefer installing the two binaries on the host (make install): the image
#   adds nothing to the sandbox's isolation, only a way to ship it.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The pinned runsc (internal/versions/versions.env, tools/runsc), static and
# with its seccomp filters precompiled, as `make runsc` builds it.
RUN mkdir -p /out && cp "$(SECURETRAIN_TOOLS=/tmp/tools scripts/build-runsc.sh)" /out/runsc
RUN go build -trimpath -tags urfave_cli_no_docs -o /out/securetrain ./cmd/securetrain

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      iproute2 ca-certificates python3 kmod \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/runsc /usr/local/bin/runsc
COPY --from=build /out/securetrain /usr/local/bin/securetrain
ENTRYPOINT ["/usr/local/bin/securetrain"]
CMD ["check"]
