#!/usr/bin/env bash
# System packages the napari tests need on Debian/Ubuntu: an X server for headless machines (Xvfb),
# Mesa's OpenGL (napari's canvas) and the libraries Qt's xcb platform plugin loads. Run as root.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 \
    libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
    libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xfixes0 libdbus-1-3 libfontconfig1 \
    >/dev/null
