#!/usr/bin/env bash
# Install the Debian packages the lab needs, only those that are missing.
#
#   prometheus               always (we run /usr/bin/prometheus ourselves, never its service)
#   openjdk-17-jdk-headless  only if no Java 17 is found
#   maven                    only if `mvn` is missing
#   socat                    the lab's pods: `kubectl port-forward` relays into a pod's network namespace
#
# With --image (what `make image` runs), also the image tools, each only if missing:
#   mmdebstrap               the image's Debian root
#   umoci                    writes (and, in the tests, unpacks) the OCI layout
#   skopeo                   turns the layout into an oci-archive and pushes it
#
# `apt-get update` runs only when something must be installed. Idempotent; needs root
# (or passwordless sudo) when it has work to do.
set -euo pipefail

have_java17() {
    local java
    for java in "${JAVA_HOME:+$JAVA_HOME/bin/java}" "$(command -v java || true)" /usr/lib/jvm/*-17-*/bin/java; do
        [[ -n "$java" && -x "$java" ]] || continue
        if "$java" -version 2>&1 | grep -Eq 'version "17[."]'; then
            return 0
        fi
    done
    return 1
}

missing=()
[[ -x /usr/bin/prometheus ]] || missing+=(prometheus)
have_java17 || missing+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
[[ -x /usr/bin/socat ]] || missing+=(socat)
present="prometheus, java 17 and maven are present"
if [[ "${1:-}" == "--image" ]]; then
    for tool in mmdebstrap umoci skopeo; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    present="prometheus, java 17, maven, mmdebstrap, umoci and skopeo are present"
elif [[ -n "${1:-}" ]]; then
    echo "install-prereqs: unknown option $1 (the only option is --image)" >&2
    exit 2
fi

if ((${#missing[@]} == 0)); then
    echo "install-prereqs: nothing to install ($present)"
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-prereqs: need root to install ${missing[*]}" >&2; exit 2; }
    SUDO=(sudo)
fi

echo "install-prereqs: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

# The package may start its own service where systemd runs; the lab starts its own servers.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [[ -d /run/systemd/system ]]; then
    "${SUDO[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "install-prereqs: done"
