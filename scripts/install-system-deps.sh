#!/usr/bin/env bash
# Installs the Debian packages Chorus needs and that pip cannot provide:
#   ffmpeg, libopus0   the audio path (pydub decodes/encodes files with ffmpeg; Opus on the wire)
#   festival + HTS     synthesised test speech for the audio and caption tests
#   chromium, driver   the headless browser that tests the bridge's web page
#   fonts-noto-color-emoji  so the page's reactions (and its screenshots) show emoji
#   nodejs, npm        (only when npm is missing) installs matrix-widget-api for the widget tests
#   icecast2           the Icecast tier's tests feed a real one; the live.ogg benchmark's peer
#   postgresql,        the tests' database and the edges' feed: the tests use the servers
#   redis-server       configured or running, else start throwaway ones from these packages
# Does nothing when every package is already there. Needs root (or sudo).
set -euo pipefail

PACKAGES=(ffmpeg libopus0 festival festvox-us-slt-hts chromium chromium-driver fonts-noto-color-emoji sox
          icecast2 postgresql redis-server)
if ! command -v npm >/dev/null 2>&1; then
    PACKAGES+=(nodejs npm)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "system packages: all present (${PACKAGES[*]})"
    exit 0
fi

echo "system packages: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "error: need root to install ${missing[*]}; run: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "system packages: done"
