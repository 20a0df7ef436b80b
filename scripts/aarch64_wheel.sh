#!/usr/bin/env bash
# Cross-build the aarch64 Linux wheel with zig, check it, and smoke-test it under qemu
# with Debian's arm64 CPython and NumPy (from Debian's packages, unpacked into a folder;
# nothing arm64 is installed).
#
#   bash scripts/aarch64_wheel.sh OUT_DIR WORK_DIR
#
# A part that needs what this machine cannot get (the Rust standard library for the
# target, qemu, Debian's arm64 packages) says so and ends the script with exit 0; a
# build or test that runs and fails exits non-zero.
set -euo pipefail
out=$1 work=$2
target=aarch64-unknown-linux-gnu
here=$(cd "$(dirname "$0")" && pwd)
skip() { echo "aarch64: $*"; exit 0; }

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target" >/dev/null 2>&1 ||
        skip "not built: the Rust standard library for $target cannot be had here"
fi
maturin build --release --quiet --zig --compatibility manylinux_2_17 --target "$target" --out "$out"
wheel=$(echo "$out"/ferrograd-*_aarch64.whl)
python "$here/check_wheel.py" "$wheel" --max-mib 4

# Smoke test under user-mode qemu: Debian's arm64 python3.11 and python3-numpy, unpacked.
if ! command -v qemu-aarch64-static >/dev/null; then
    { apt-get update -qq && apt-get install -y -qq qemu-user-static; } >/dev/null 2>&1 ||
        skip "built and checked, not run: qemu-user-static cannot be installed"
fi
added=
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64 && added=1
fi
cleanup() { [[ -z "$added" ]] || dpkg --remove-architecture arm64 || true; }
trap cleanup EXIT
root="$work/arm64-root" debs="$work/arm64-debs"
mkdir -p "$root" "$debs"
packages=(libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
    libuuid1 libcrypt1 libtinfo6 libncursesw6 libreadline8 libsqlite3-0 libdb5.3 libgdbm6
    libnsl2 libtirpc3 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libcom-err2 libkrb5support0
    libkeyutils1 libpython3.11-minimal python3.11-minimal libpython3.11-stdlib
    python3-numpy libblas3 liblapack3 libgfortran5)
if ! { apt-get update -qq &&
    (cd "$debs" && apt-get download -qq "${packages[@]/%/:arm64}" media-types); } >/dev/null 2>&1; then
    skip "built and checked, not run: Debian's arm64 packages cannot be had"
fi
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$root"; done
# Debian picks BLAS/LAPACK through alternatives, which unpacking does not set up.
ln -sf blas/libblas.so.3 "$root/usr/lib/aarch64-linux-gnu/libblas.so.3"
ln -sf lapack/liblapack.so.3 "$root/usr/lib/aarch64-linux-gnu/liblapack.so.3"
site="$work/arm64-site"
mkdir -p "$site" && (cd "$site" && python -m zipfile -e "$wheel" .)
(cd "$work" && PYTHONPATH="$site" qemu-aarch64-static -L "$root" "$root/usr/bin/python3.11" \
    "$here/smoke_wheel.py" --from "$site")
