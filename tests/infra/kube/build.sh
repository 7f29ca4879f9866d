#!/usr/bin/env bash
# Build kube-apiserver, at the version go.mod pins, into .cache/bin/kube-apiserver, unless that
# version is already there (the check takes a few milliseconds). Called by scripts/setup.
#
# Everything comes from the Go module proxy and is checked against go.sum. Measured on 2 cores:
# a cold build (empty module and build caches) takes about 4 minutes (downloads are ~15 s of
# it) and fills 0.5 GiB of module cache and 2.1 GiB of build cache; a relink with warm caches
# (say, after deleting the binary), about 5 s. The build is reproducible: -trimpath and no
# build date, so two builds of one go.mod/go.sum with one Go version are byte-identical.
#
# The binary is stamped like a release build: `kube-apiserver --version` prints
# "Kubernetes v1.34.4", and GET /version says gitVersion v1.34.4, major 1, minor 34.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${KUBE_APISERVER_BIN:-$here/../../../.cache/bin/kube-apiserver}
version=$(sed -nE 's|^[[:space:]]*k8s\.io/kubernetes (v[0-9]+\.[0-9]+\.[0-9]+)( .*)?$|\1|p' "$here/go.mod")
[ -n "$version" ] || { echo "[kube] no k8s.io/kubernetes version in $here/go.mod" >&2; exit 1; }
if [ -x "$out" ] && [ "$("$out" --version 2>/dev/null)" = "Kubernetes $version" ]; then
  exit 0
fi

major=${version#v}; major=${major%%.*}
minor=${version#v"$major".}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done
echo "[kube] building kube-apiserver $version (about 4 min on 2 cores with empty Go caches)"
start=$(date +%s)
mkdir -p "$(dirname "$out")"
cd "$here"
CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$out.tmp" \
  k8s.io/kubernetes/cmd/kube-apiserver
mv "$out.tmp" "$out"
echo "[kube] built $("$out" --version) in $(( $(date +%s) - start )) s"
