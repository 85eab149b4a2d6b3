#!/bin/sh
# ctest's entry to validate.mjs: exit 77 (skipped) with the reason when what
# it needs is missing — Node.js >= 20, kubectl (with kustomize), and the
# npm packages (scripts/install-deps.sh runs `npm ci` here).
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "k8s validation skipped: $*"; exit 77; }
command -v node >/dev/null 2>&1 || skip "node not found (apt-get install nodejs npm)"
major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
[ "$major" -ge 20 ] 2>/dev/null || skip "node $(node --version 2>/dev/null) is older than 20"
command -v kubectl >/dev/null 2>&1 || skip "kubectl not found"
[ -f "$here/node_modules/.package-lock.json" ] || skip "no $here/node_modules (run scripts/install-deps.sh, or npm ci --no-audit --no-fund in k8s/validate)"
exec node "$here/validate.mjs" "$@"
