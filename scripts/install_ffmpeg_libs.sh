#!/usr/bin/env bash
# The system FFmpeg libraries torchcodec needs (PyAV and decord bundle their own). Installs them
# where this machine allows (Debian/Ubuntu as root); elsewhere it says how, and exits 0: seqctx
# then reads with decord or PyAV, and the torchcodec tests report what is missing.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so'; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends ffmpeg >/dev/null 2>&1 \
        || { apt-get update >/dev/null && apt-get install -y --no-install-recommends ffmpeg >/dev/null; }
    echo "installed the system FFmpeg libraries (apt-get install ffmpeg) for torchcodec"
else
    echo "torchcodec needs the system FFmpeg libraries: Debian/Ubuntu: sudo apt-get install ffmpeg;" \
         "macOS: brew install ffmpeg; conda: conda install -c conda-forge 'ffmpeg<8'" >&2
fi
