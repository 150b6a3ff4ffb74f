#!/usr/bin/env bash
# Install the system binaries the test suite needs: promtool and prometheus (Debian package
# `prometheus`), amtool and prometheus-alertmanager (package `prometheus-alertmanager`).
#
# Idempotent: does nothing when every binary is already on PATH, so `make test` can call it
# every time. apt-get update runs only when something must be installed.
#
# Extra Debian packages can be requested through EXTRA_SYSTEM_PACKAGES (space-separated), e.g.
#   EXTRA_SYSTEM_PACKAGES="chromium" scripts/system-deps.sh
# They are installed only when `dpkg -s` says they are missing.
set -euo pipefail

# binary -> Debian package that ships it
declare -A PACKAGE_FOR=(
    [promtool]=prometheus
    [prometheus]=prometheus
    [amtool]=prometheus-alertmanager
    [prometheus-alertmanager]=prometheus-alertmanager
)

missing_packages=()
add_missing() {
    local pkg=$1 existing
    for existing in "${missing_packages[@]:-}"; do
        [[ "$existing" == "$pkg" ]] && return 0
    done
    missing_packages+=("$pkg")
}

for binary in "${!PACKAGE_FOR[@]}"; do
    command -v "$binary" >/dev/null 2>&1 || add_missing "${PACKAGE_FOR[$binary]}"
done
for pkg in ${EXTRA_SYSTEM_PACKAGES:-}; do
    dpkg -s "$pkg" >/dev/null 2>&1 || add_missing "$pkg"
done

if ((${#missing_packages[@]} > 0)); then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "system-deps: apt-get not found; install ${missing_packages[*]} by hand" >&2
        exit 1
    fi
    as_root=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            as_root=(sudo)
        else
            echo "system-deps: need root (or sudo) to install ${missing_packages[*]}" >&2
            exit 1
        fi
    fi
    echo "system-deps: installing ${missing_packages[*]}"
    # The packages' postinst scripts try to start services; in containers without an init
    # system that fails harmlessly, and we only need the binaries.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing_packages[@]}" >/dev/null
fi

status=0
for binary in promtool prometheus amtool prometheus-alertmanager; do
    if path=$(command -v "$binary"); then
        echo "system-deps: $binary -> $path"
    else
        echo "system-deps: $binary still missing after install" >&2
        status=1
    fi
done
exit "$status"
