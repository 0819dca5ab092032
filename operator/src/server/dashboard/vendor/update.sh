#!/usr/bin/env bash
# Refreshes the vendored xterm.js files in ../assets from the versions pinned
# in package-lock.json. Only needed to change versions: `cargo build` uses
# the copies checked in under ../assets and needs no npm.
set -euo pipefail
cd "$(dirname "$0")"
npm ci --no-audit --no-fund --ignore-scripts
cp node_modules/@xterm/xterm/lib/xterm.js ../assets/xterm.js
cp node_modules/@xterm/xterm/css/xterm.css ../assets/xterm.css
cp node_modules/@xterm/addon-fit/lib/addon-fit.js ../assets/addon-fit.js
sed -i '/sourceMappingURL/d' ../assets/xterm.js ../assets/addon-fit.js
