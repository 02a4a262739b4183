#!/usr/bin/env bash
# Installs what `make demo` or `make test` needs, idempotently: a .venv with the workspace, and for
# tests the Debian packages redis-server, prometheus (the server and promtool, for tests/prometheus), chromium and
# chromium-driver, and for the real image build
# (tests/k8s/test_image_build.py) buildah, skopeo, mmdebstrap and docker-registry.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-test}
python=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$mode-$(cat requirements/*.txt */pyproject.toml pyproject.toml | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages for $mode"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "requirements/$mode.txt"
  touch "$stamp"
fi

if [ "$mode" = test ]; then
  missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)  # redis-cli --cluster (tests/cluster)
  command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
  command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
  command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "bootstrap: installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi
