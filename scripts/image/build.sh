#!/usr/bin/env bash
# Build the Isthmus image (operator and cqlguard) as an OCI image archive, with no container daemon.
#
#   scripts/image/build.sh [OUT]        OUT defaults to out/image/isthmus-<version>.oci.tar
#
# Three layers, each from pinned inputs:
#   1. Debian root   mmdebstrap --variant=extract of scripts/image/packages.txt (Python 3.11 and the
#                    shared libraries it needs; no shell, no dpkg, no apt), a dpkg status written
#                    from the extracted packages' own control files (so scanners see them), and a
#                    passwd/group with the non-root user isthmus (65532).
#   2. Python deps   pip install --only-binary of scripts/image/requirements.txt (CPython 3.11,
#                    manylinux x86_64) into /usr/local/lib/python3.11/dist-packages.
#   3. helm          /usr/local/bin/helm, the same build as the lab's (`python -m isthmus.lab.binaries helm`:
#                    helm.sh/helm/v3 from the Go module proxy, -trimpath, stripped), so the operator in the
#                    image reconciles ChartReleases without a mount.
#   4. Isthmus       the project's own wheel, /usr/local/bin/isthmus, and the SBOM
#                    (/usr/share/isthmus/sbom.json: every Debian package, Python distribution and binary).
# Layers 1+2 are cached under ~/.cache/isthmus/image/base-<key> (key: packages.txt,
# requirements.txt and the text of build_base); the finished archive under
# ~/.cache/isthmus/image/isthmus-<key>.oci.tar (key: the base key, the wheel's and helm's sha256, the revision). Every file's mtime is SOURCE_DATE_EPOCH (the commit time),
# so the same inputs give the same digest.
#
# Needs root (mmdebstrap's root mode, chroot for byte-compiling) and mmdebstrap, umoci, skopeo:
# `make image` installs them first (scripts/install-prereqs.sh --image).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
SUITE=bookworm
MIRROR=${ISTHMUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SITE=/usr/local/lib/python3.11/dist-packages
USER_ID=65532
REPOSITORY=${ISTHMUS_IMAGE_REPOSITORY:-ghcr.io/isthmus-dev/isthmus}
CACHE=${ISTHMUS_CACHE:-$HOME/.cache/isthmus}/image

die() { echo "build-image: $*" >&2; exit 2; }
say() { echo "build-image: $*" >&2; }

[[ $(id -u) -eq 0 ]] || die "needs root (mmdebstrap root mode and chroot); run it as root"
for tool in mmdebstrap umoci skopeo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run scripts/install-prereqs.sh --image"
done
[[ -x "$PY" ]] || die "no Python at $PY: run make setup"

VERSION=$("$PY" -c 'import isthmus; print(isthmus.__version__)')
OUT=${1:-$REPO/out/image/isthmus-$VERSION.oci.tar}
REVISION=$(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)
git -C "$REPO" diff --quiet HEAD -- 2>/dev/null || REVISION="$REVISION-dirty"  # built from uncommitted files
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || echo 0)}
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
export TZ=UTC LC_ALL=C.UTF-8 PYTHONHASHSEED=0

mkdir -p "$CACHE" "$(dirname "$OUT")"
WORK=$(mktemp -d "$CACHE/work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

clamp() {  # every mtime to SOURCE_DATE_EPOCH: the layer tars are then byte-for-byte reproducible
    find "$1" -depth -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
}

# --- the wheel ------------------------------------------------------------------------------------
say "building the isthmus $VERSION wheel"
"$PY" -m pip wheel -q --no-deps --wheel-dir "$WORK/wheel" "$REPO" >&2
WHEEL=$(ls "$WORK"/wheel/isthmus-*.whl)
WHEEL_SHA=$(sha256sum "$WHEEL" | cut -d' ' -f1)

# --- helm (built once into the lab's cache, like the other Go binaries) ------------------------------
HELM=$("$PY" -m isthmus.lab.binaries helm) || die "could not build helm (see its build log under $CACHE/../tools)"
HELM_VERSION=$("$PY" -c 'from isthmus.lab.binaries import HELM_VERSION; print(HELM_VERSION)')
HELM_SHA=$(sha256sum "$HELM" | cut -d' ' -f1)

# --- layers 1 and 2: Debian root and Python dependencies ----------------------------------------
# (cached under $BASE, keyed by the lists and by this function's own text: `declare -f build_base`)
build_base() {
    rm -rf "$BASE"
    mkdir -p "$BASE"
    packages=$(grep -v '^\s*#' "$HERE/packages.txt" | xargs | tr ' ' ',')
    say "layer 1: mmdebstrap --variant=extract $SUITE: $packages"
    # The extract hook runs while the downloaded packages are still there: it records each
    # package's control file as an installed dpkg status entry.
    mmdebstrap --variant=extract --mode=root --format=directory --quiet \
        --include="$packages" \
        --extract-hook='for deb in "$1"/var/cache/apt/archives/*.deb; do
            dpkg-deb --field "$deb"; echo "Status: install ok installed"; echo; done > "$1/.dpkg-status"' \
        "$SUITE" "$BASE/debian" "$MIRROR" >&2
    root=$BASE/debian
    mkdir -p "$root/var/lib/dpkg"
    # dpkg-deb prints the fields in control-file order; dpkg wants Status after Package.
    awk 'BEGIN{RS=""; ORS="\n\n"} {
            n = split($0, lines, "\n"); status = ""; out = ""
            for (i = 1; i <= n; i++) if (lines[i] ~ /^Status:/) status = lines[i]
            for (i = 1; i <= n; i++) if (lines[i] !~ /^Status:/) {
                out = out lines[i] "\n"; if (lines[i] ~ /^Package:/) out = out status "\n" }
            printf "%s\n", out }' "$root/.dpkg-status" > "$root/var/lib/dpkg/status"
    rm -f "$root/.dpkg-status"
    # What a container needs and an extract does not write; and what it does not need.
    rm -rf "$root"/var/cache/apt "$root"/var/lib/apt "$root"/etc/apt "$root"/usr/share/doc "$root"/usr/share/man \
        "$root"/usr/share/info "$root"/usr/share/lintian "$root"/dev/* "$root"/usr/share/locale "$root"/var/log/* \
        "$root"/usr/lib/python3.11/ensurepip "$root"/usr/lib/python3.11/idlelib "$root"/usr/lib/python3.11/tkinter \
        "$root"/usr/lib/python3.11/lib2to3 "$root"/usr/lib/python3.11/pydoc_data
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nisthmus:x:%d:%d:isthmus:/nonexistent:/usr/sbin/nologin\n' \
        $USER_ID $USER_ID > "$root/etc/passwd"
    printf 'root:x:0:\nisthmus:x:%d:\n' $USER_ID > "$root/etc/group"
    mkdir -p "$root/tmp" "$root/proc" "$root/dev" "$root/etc/cqlguard" "$root/var/log/cqlguard"
    chmod 1777 "$root/tmp"

    say "layer 2: pinned Python dependencies into $SITE"
    deps=$BASE/deps
    "$PY" -m pip install -q --no-compile --no-deps --only-binary=:all: --python-version 3.11 \
        --implementation cp --abi cp311 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_17_x86_64 --target "$deps$SITE" --requirement "$HERE/requirements.txt" >&2
    rm -rf "$deps$SITE/bin"
    # Byte-compile with the image's own Python, hashes instead of mtimes, in each layer's own files.
    mkdir -p "$(dirname "$root$SITE")"
    rm -rf "$root$SITE"
    mv "$deps$SITE" "$root$SITE"
    chroot "$root" /usr/bin/python3 -I -m compileall -q -j 1 --invalidation-mode unchecked-hash \
        /usr/lib/python3.11 "$SITE" >/dev/null
    mv "$root$SITE" "$deps$SITE"
    mkdir -p "$root$SITE"
    clamp "$BASE/debian"; clamp "$BASE/deps"
    touch "$BASE/done"
}

BASE_KEY=$(cat "$HERE/packages.txt" "$HERE/requirements.txt" <(declare -f build_base clamp) <(echo "$SUITE $MIRROR $USER_ID") \
    | sha256sum | cut -c1-16)
KEY=$(echo "$BASE_KEY $WHEEL_SHA $HELM_SHA $REVISION $SOURCE_DATE_EPOCH $REPOSITORY" | sha256sum | cut -c1-16)
BASE=$CACHE/base-$BASE_KEY
FINAL=$CACHE/isthmus-$KEY.oci.tar

report() {
    local digest size
    digest=$(skopeo inspect --raw "oci-archive:$OUT" | sha256sum | cut -d' ' -f1)
    size=$(skopeo inspect --config "oci-archive:$OUT" >/dev/null && du -b "$OUT" | cut -f1)
    echo "sha256:$digest" > "$OUT.digest"
    cat <<EOF
image:   $OUT
digest:  sha256:$digest   (archive $((size / 1024 / 1024)) MiB)
ref:     $REPOSITORY@sha256:$digest
push:    skopeo copy oci-archive:$OUT docker://$REPOSITORY:$VERSION
use:     isthmus operator install --image $REPOSITORY@sha256:$digest ...
         helm install isthmus deploy/chart --set image.digest=sha256:$digest
EOF
}

# ISTHMUS_IMAGE_FRESH=1 builds layers 3 and 4 and the archive again (layers 1 and 2 still come from the cache)
# and leaves the cached archive alone: the tests use it to show that the same inputs give the same digest.
FRESH=${ISTHMUS_IMAGE_FRESH:-0}
if [[ -f "$FINAL" && $FRESH != 1 ]]; then
    say "cached: $FINAL (inputs unchanged)"
    cp "$FINAL" "$OUT"
    report
    exit 0
fi

if [[ ! -f "$BASE/done" ]]; then
    build_base
fi

# --- layer 3: helm -------------------------------------------------------------------------------
say "layer 3: helm $HELM_VERSION"
tools=$WORK/tools
install -D -m 0755 "$HELM" "$tools/usr/local/bin/helm"
clamp "$tools"

# --- layer 4: the isthmus wheel -------------------------------------------------------------------
say "layer 4: $(basename "$WHEEL")"
app=$WORK/app
"$PY" -m pip install -q --no-compile --no-deps --target "$app$SITE" "$WHEEL" >&2
rm -rf "$app$SITE/bin"
# pip records where the wheel came from (a temporary path): not part of what is installed.
rm -f "$app$SITE"/isthmus-*.dist-info/direct_url.json
sed -i '/direct_url.json/d' "$app$SITE"/isthmus-*.dist-info/RECORD
mkdir -p "$app/usr/local/bin" "$app/usr/share/isthmus"
# No shell at run time: the kernel reads this shebang and runs Python directly.
printf '#!/usr/bin/python3 -I\nimport sys\n\nfrom isthmus.cli import main\n\nsys.exit(main())\n' \
    > "$app/usr/local/bin/isthmus"
chmod 0755 "$app/usr/local/bin/isthmus"

# A throwaway root (hard links to layers 1 and 2, a copy of layer 4) to compile and run Python in.
stage=$WORK/stage
cp -al "$BASE/debian" "$stage"
rm -rf "$stage$SITE"
cp -al "$BASE/deps$SITE" "$stage$SITE"
mkdir -p "$stage/tmp/app"
cp -a "$app$SITE/." "$stage/tmp/app/"
chroot "$stage" /usr/bin/python3 -I -m compileall -q -j 1 --invalidation-mode unchecked-hash \
    -s /tmp/app -p "$SITE" /tmp/app >/dev/null
cp -a "$stage/tmp/app/." "$app$SITE/"
cp -a "$stage/tmp/app/." "$stage$SITE/"

# The SBOM: every Debian package (from the dpkg status), Python distribution (from its metadata) and binary.
HELM_VERSION=$HELM_VERSION HELM_SHA=$HELM_SHA chroot "$stage" /usr/bin/python3 -I - \
    > "$app/usr/share/isthmus/sbom.json" <<'EOF'
import importlib.metadata as md, json, os, re
debs = []
for para in open("/var/lib/dpkg/status", encoding="utf-8").read().split("\n\n"):
    fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", para, re.M))
    if "Package" in fields:
        debs.append({"name": fields["Package"], "version": fields["Version"],
                     "architecture": fields.get("Architecture", ""), "source": fields.get("Source", fields["Package"])})
pys = [{"name": d.metadata["Name"], "version": d.version, "license": d.metadata.get("License-Expression")
        or d.metadata.get("License") or ""} for d in md.distributions(path=["/usr/local/lib/python3.11/dist-packages"])]
bins = [{"name": "helm", "version": os.environ["HELM_VERSION"], "path": "/usr/local/bin/helm",
         "sha256": os.environ["HELM_SHA"], "source": "helm.sh/helm/v3/cmd/helm from the Go module proxy"}]
print(json.dumps({"debian": sorted(debs, key=lambda p: p["name"]), "binaries": bins,
                  "python": sorted(pys, key=lambda p: p["name"].lower())}, indent=1, sort_keys=True))
EOF
clamp "$app"

# --- the OCI layout, then the archive ---------------------------------------------------------------
layout=$WORK/oci
umoci init --layout "$layout"
umoci new --image "$layout:isthmus"
history=(--history.created "$CREATED" --history.author isthmus)
umoci insert --image "$layout:isthmus" "${history[@]}" --history.created_by "mmdebstrap $SUITE" \
    "$BASE/debian" /
umoci insert --image "$layout:isthmus" "${history[@]}" --history.created_by "pip requirements.txt" \
    "$BASE/deps" /
umoci insert --image "$layout:isthmus" "${history[@]}" --history.created_by "helm $HELM_VERSION" "$tools" /
umoci insert --image "$layout:isthmus" "${history[@]}" --history.created_by "isthmus $VERSION wheel" "$app" /
umoci config --image "$layout:isthmus" "${history[@]}" --created "$CREATED" --author isthmus \
    --os linux --architecture amd64 --config.user "$USER_ID:$USER_ID" --config.workingdir / \
    --config.entrypoint /usr/local/bin/isthmus --config.cmd --help \
    --config.env PATH=/usr/local/bin:/usr/bin --config.env PYTHONDONTWRITEBYTECODE=1 \
    --config.env PYTHONUNBUFFERED=1 --config.env LANG=C.UTF-8 \
    --config.label "org.opencontainers.image.source=https://github.com/isthmus-dev/isthmus" \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.revision=$REVISION" \
    --config.label "org.opencontainers.image.created=$CREATED" \
    --config.label "org.opencontainers.image.title=isthmus" \
    --config.label "org.opencontainers.image.description=Isthmus operator and cqlguard" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "dev.isthmus.sbom=/usr/share/isthmus/sbom.json"
umoci gc --layout "$layout"
if [[ $FRESH == 1 ]]; then
    rm -f "$OUT"
    skopeo copy --quiet "oci:$layout:isthmus" "oci-archive:$OUT:$REPOSITORY:$VERSION" >&2
else
    rm -f "$FINAL.tmp"
    skopeo copy --quiet "oci:$layout:isthmus" "oci-archive:$FINAL.tmp:$REPOSITORY:$VERSION" >&2
    mv "$FINAL.tmp" "$FINAL"
    cp "$FINAL" "$OUT"
fi
report
