#!/usr/bin/env bash
# Install Debian's SLURM + munge for the single-host SLURM tests (tests/slurm_cluster.py).
# Idempotent: does nothing when the packages are present or when not root (those tests then skip).
set -euo pipefail
packages=(slurmctld slurmd slurm-client munge)
if [ "$(id -u)" -ne 0 ]; then
    echo "setup_slurm: not root, skipping (SLURM tests will skip)"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "setup_slurm: no apt-get, skipping (SLURM tests will skip)"
    exit 0
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup_slurm: ${packages[*]} already installed"
    exit 0
fi
echo "setup_slurm: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
