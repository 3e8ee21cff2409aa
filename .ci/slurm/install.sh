#!/usr/bin/env bash
# Install the SLURM and MUNGE packages for a one-node test cluster (Debian/Ubuntu).
#
# Idempotent and fast when everything is already there. Needs root (or sudo
# without a password). Exit status: 0 installed, 1 install failed,
# 2 cannot install here (no root, no apt-get).
set -euo pipefail

needed_commands=(munged munge slurmctld slurmd sbatch squeue sinfo scontrol srun scancel)
packages=(slurm-wlm slurm-client munge)

# `sinfo --version` needs a slurm.conf, so ask dpkg instead.
_slurm_version() {
    dpkg-query -W -f='${Version}' slurm-client 2>/dev/null || echo '?'
}

missing=()
for cmd in "${needed_commands[@]}"; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1; then
        missing+=("$cmd")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "slurm install: already installed (slurm $(_slurm_version))"
    exit 0
fi
echo "slurm install: missing commands: ${missing[*]}"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "slurm install: apt-get not found; install ${packages[*]} by hand" >&2
    exit 2
fi
if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
else
    echo "slurm install: not root and no password-less sudo; cannot install ${packages[*]}" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
# A fresh container has no package lists; refresh them once before installing.
# Wait for a concurrent apt/dpkg run instead of failing at once.
apt_opts=(-q -o DPkg::Lock::Timeout=300)
"${sudo[@]}" apt-get "${apt_opts[@]}" update
"${sudo[@]}" apt-get "${apt_opts[@]}" install -y --no-install-recommends "${packages[@]}"
echo "slurm install: done (slurm $(_slurm_version))"
