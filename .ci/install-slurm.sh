#!/usr/bin/env bash
# Install the Slurm daemons and clients (slurm-wlm) and munge, for the integration tests that start a real
# single-node Slurm. Idempotent: does nothing when they are installed. Debian/Ubuntu, as root (or with sudo).
set -euo pipefail

have_all() {
  local b
  for b in sbatch squeue scontrol scancel sinfo slurmctld slurmd munged mungekey; do
    PATH="$PATH:/usr/sbin:/sbin" command -v "$b" >/dev/null 2>&1 || return 1
  done
}

if have_all; then
  echo "slurm-wlm and munge already installed"
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-slurm: apt-get not found; install slurm-wlm and munge with this system's package manager" >&2
  exit 1
fi
SUDO=
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "install-slurm: needs root (or sudo) to install packages" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# Wait for the dpkg lock rather than fail when another apt run holds it (shared CI machines).
APT=($SUDO apt-get -q -o DPkg::Lock::Timeout=600)
"${APT[@]}" update -qq
"${APT[@]}" install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
have_all
echo "installed slurm-wlm $(dpkg-query -W -f '${Version}' slurm-wlm)"
