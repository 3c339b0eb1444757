#!/usr/bin/env bash
# Install and start the three container engines bottle is tested on:
# Docker, rootful Podman and rootless Podman (as an unprivileged user).
# Idempotent: a second run only starts what is not already answering.
# Needs root and Debian 12. Prints one line per step on stderr.
set -euo pipefail

ROOTLESS_USER="${BOTTLE_ROOTLESS_USER:-bottle-rootless}"
LOG_DIR="${BOTTLE_ENGINE_LOG_DIR:-/var/log/bottle-engines}"
say() { printf 'engines: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
    say "must run as root (installs packages and starts dockerd)"; exit 1
fi
mkdir -p "$LOG_DIR"

need_pkgs=()
for p in docker.io podman debootstrap uidmap slirp4netns fuse-overlayfs runc git curl; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    say "installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >"$LOG_DIR/apt.log" 2>&1 \
        || { tail -20 "$LOG_DIR/apt.log" >&2; exit 1; }
fi

# crun cannot run on cgroup v1 hybrid hosts and the default rlimits are
# refused; nproc above pid_max is refused too.
pid_max=$(cat /proc/sys/kernel/pid_max)
nproc_limit=$(( pid_max < 32768 ? pid_max : 32768 ))
mkdir -p /etc/containers
cat >/etc/containers/containers.conf <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=${nproc_limit}:${nproc_limit}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CONF

wait_for() {  # wait_for SECONDS DESCRIPTION CMD...
    local limit=$1 what=$2; shift 2
    for _ in $(seq 1 $((limit * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    say "$what did not answer within ${limit}s"; return 1
}

# Docker. The /usr/bin client is Debian's, matching the daemon.
if ! /usr/bin/docker version >/dev/null 2>&1; then
    say "starting dockerd"
    nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 &
    wait_for 60 dockerd /usr/bin/docker version || { tail -20 "$LOG_DIR/dockerd.log" >&2; exit 1; }
fi
# Docker sets FORWARD to DROP and bridged packets pass iptables, so traffic
# between peers on one Podman bridge would be dropped. Accept only
# bridge-internal Podman traffic; isolation between networks stays.
if iptables -L DOCKER-USER >/dev/null 2>&1; then
    iptables -C DOCKER-USER -m physdev --physdev-is-bridged -i podman+ -j ACCEPT 2>/dev/null \
        || iptables -I DOCKER-USER -m physdev --physdev-is-bridged -i podman+ -j ACCEPT
fi
say "docker up: $(/usr/bin/docker version --format '{{.Server.Version}} api {{.Server.APIVersion}}')"

# Rootful Podman API service.
mkdir -p /run/podman
if ! curl -sf --unix-socket /run/podman/podman.sock http://d/_ping >/dev/null 2>&1; then
    say "starting rootful podman service"
    nohup podman system service --time=0 unix:///run/podman/podman.sock >"$LOG_DIR/podman-rootful.log" 2>&1 &
    wait_for 60 "rootful podman" curl -sf --unix-socket /run/podman/podman.sock http://d/_ping \
        || { tail -20 "$LOG_DIR/podman-rootful.log" >&2; exit 1; }
fi
say "rootful podman up: $(podman version --format '{{.Server.Version}}' 2>/dev/null || echo '?')"

# Rootless Podman under an ordinary user.
if ! id "$ROOTLESS_USER" >/dev/null 2>&1; then
    say "creating user $ROOTLESS_USER"
    useradd --create-home --shell /bin/bash "$ROOTLESS_USER"
fi
uid=$(id -u "$ROOTLESS_USER")
grep -q "^$ROOTLESS_USER:" /etc/subuid || usermod --add-subuids 100000-165535 "$ROOTLESS_USER"
grep -q "^$ROOTLESS_USER:" /etc/subgid || usermod --add-subgids 100000-165535 "$ROOTLESS_USER"
chmod 666 /dev/net/tun
run_dir="/run/user/$uid"
mkdir -p "$run_dir"
chown "$ROOTLESS_USER": "$run_dir"
chmod 700 "$run_dir"
as_user() { runuser -u "$ROOTLESS_USER" -- env XDG_RUNTIME_DIR="$run_dir" HOME="/home/$ROOTLESS_USER" "$@"; }
sock="$run_dir/podman/podman.sock"
runuser -u "$ROOTLESS_USER" -- mkdir -p "$run_dir/podman"
# Rootless Podman falls back to vfs, which copies every layer whole: a
# container create takes seconds and a sidecar build minutes. Overlay through
# fuse-overlayfs shares the layers (podman run: ~0.1 s instead of ~0.9 s).
chmod 666 /dev/fuse
storage_conf="/home/$ROOTLESS_USER/.config/containers/storage.conf"
if ! grep -qs fuse-overlayfs "$storage_conf"; then
    say "rootless podman storage: overlay with fuse-overlayfs (the old store is emptied)"
    # A store made with another driver cannot be opened with this one.
    pkill -u "$ROOTLESS_USER" -f "podman system service" 2>/dev/null || true
    as_user podman system reset --force >/dev/null 2>&1 || true
    runuser -u "$ROOTLESS_USER" -- mkdir -p "$(dirname "$storage_conf")"
    printf '[storage]\ndriver = "overlay"\n[storage.options.overlay]\nmount_program = "/usr/bin/fuse-overlayfs"\n' \
        | runuser -u "$ROOTLESS_USER" -- tee "$storage_conf" >/dev/null
fi
if ! curl -sf --unix-socket "$sock" http://d/_ping >/dev/null 2>&1; then
    say "starting rootless podman service for $ROOTLESS_USER"
    as_user podman system migrate >/dev/null 2>&1 || true
    nohup runuser -u "$ROOTLESS_USER" -- env XDG_RUNTIME_DIR="$run_dir" HOME="/home/$ROOTLESS_USER" \
        podman system service --time=0 "unix://$sock" >"$LOG_DIR/podman-rootless.log" 2>&1 &
    wait_for 60 "rootless podman" curl -sf --unix-socket "$sock" http://d/_ping \
        || { tail -20 "$LOG_DIR/podman-rootless.log" >&2; exit 1; }
fi
say "rootless podman up for $ROOTLESS_USER at $sock"
