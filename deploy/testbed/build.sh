#!/usr/bin/env bash
# Build (once per machine) what the hat-ray cluster testbed needs, into a cache folder outside
# the checkout; later runs reuse every finished step. See deploy/testbed/README.md.
#
#   bash deploy/testbed/build.sh            # build or reuse; prints each step's time
#   HAT_RAY_TESTBED_CACHE=/path bash ...    # another cache folder (default ~/.cache/hat-ray-testbed)
#
# Steps (each leaves a stamp file in the cache when it finished, so an interrupted build resumes):
#   1. Debian packages: debootstrap, qemu-user-static (apt-get, as root)
#   2. binfmt_misc mounted and qemu-aarch64 registered with the F flag (works inside a chroot)
#   3. a Debian bookworm arm64 root filesystem (debootstrap, minbase + python3 3.11.2): the "Pi"
#   4. the CPU id files torch's aarch64 build reads (a Cortex-A72, the Raspberry Pi 4's core)
#   5. ~/hat-ray-venv inside it, as deploy/README.md says; the aarch64 wheels of the head's Ray and
#      torch versions unpacked into it natively (pip --platform: minutes instead of ~12 under
#      emulation), then deploy/README.md's own `pip install "ray[default,tune]==V" -e ~/hat-ray`
#      run inside the emulated node (it finds the wheels there and installs hat-ray editable)
#   6. an x86 venv with ANOTHER Ray version (for the version-mismatch test)
#   7. an x86 node with ANOTHER Python minor and the head's Ray version: a Debian trixie root
#      filesystem (python3 3.13, debootstrap) with ~/hat-ray-venv and ray[default]==V installed
#      inside it by its own pip (for the Python-mismatch test)
# Exit codes: 0 built or reused, 2 this machine cannot host the testbed (the reason on stderr).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${HAT_RAY_TESTBED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/hat-ray-testbed}"
rootfs="$cache/pi-rootfs"
suite="${HAT_RAY_TESTBED_SUITE:-bookworm}"          # bookworm's python3 is 3.11.2
mirror="${HAT_RAY_TESTBED_MIRROR:-http://deb.debian.org/debian}"
other_ray="${HAT_RAY_TESTBED_OTHER_RAY:-2.59.0}"
other_py_suite="${HAT_RAY_TESTBED_OTHER_PYTHON_SUITE:-trixie}"  # trixie's python3 is 3.13
other_py_rootfs="$cache/other-python-rootfs"
host_py="${HAT_RAY_TESTBED_PYTHON:-$repo/.venv/bin/python}"
# PyPI's aarch64 torch wheels from 2.10 on are CUDA builds whose CUDA packages have no aarch64
# wheel at the pinned versions (torch 2.13.0 needs nvidia-nccl-cu13==2.29.7: none for aarch64),
# so the Pi gets the newest CPU-only aarch64 build on PyPI, as a real Pi would (deploy/README.md)
pi_torch="${HAT_RAY_TESTBED_PI_TORCH:-2.9.1}"
venv=/root/hat-ray-venv                                # inside the Pi's root filesystem

die() { echo "testbed: $*" >&2; exit 2; }
say() { echo "testbed: $*" >&2; }
t_start=$(date +%s)
step() {  # step NAME: true when NAME still has to run (no stamp); prints the step header
    if [[ -f "$cache/.done-$1" ]]; then say "[$1] cached"; return 1; fi
    say "[$1] building ..."; step_t0=$(date +%s); return 0
}
done_step() { touch "$cache/.done-$1"; say "[$1] done in $(( $(date +%s) - step_t0 )) s"; }

[[ "$(id -u)" == 0 ]] || die "needs root (debootstrap, binfmt_misc, mount namespaces)"
[[ "$(uname -m)" == x86_64 ]] || die "the testbed is built for an x86_64 host (this is $(uname -m))"
[[ -x "$host_py" ]] || die "$host_py not found: run \`make venv\` first"
mkdir -p "$cache"
ray_version="$("$host_py" -c 'import ray; print(ray.__version__)')"
torch_version="$("$host_py" -c 'import torch; print(torch.__version__.split("+")[0])')"
say "cache $cache; head runs Ray $ray_version, torch $torch_version; the Pi gets Ray $ray_version, torch $pi_torch"

# 1. packages
if ! command -v debootstrap >/dev/null || [[ ! -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ]]; then
    say "[packages] apt-get install debootstrap qemu-user-static"
    command -v apt-get >/dev/null || die "no apt-get: install debootstrap and qemu-user-static by hand"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap qemu-user-static >/dev/null
fi

# 2. binfmt_misc (not persistent: checked on every run)
if [[ ! -e /proc/sys/fs/binfmt_misc/status ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
        || die "cannot mount binfmt_misc (needs root in the initial namespace): no emulated aarch64 node here"
fi
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    [[ -f "$conf" ]] || die "$conf missing: reinstall qemu-user-static"
    # F: the kernel opens the interpreter now, so it also runs inside the chroot
    grep -v '^#' "$conf" | head -n1 > /proc/sys/fs/binfmt_misc/register || die "could not register qemu-aarch64"
fi

# 3. the arm64 root filesystem
if step rootfs; then
    rm -f "$cache"/.done-{venv,wheels,hat-ray}   # the Pi's later steps build on its root filesystem
    rm -rf "$rootfs.tmp"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates,procps \
        "$suite" "$rootfs.tmp" "$mirror" 2>&1 | sed -u 's/^/  debootstrap: /' | grep -E 'Retrieving|Extracting|Configuring|Base system|E:' \
        | awk 'NR % 25 == 1 || /Base system|E:/' >&2
    [[ -x "$rootfs.tmp/usr/bin/python3" ]] || die "debootstrap failed (see above)"
    rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs"
    done_step rootfs
fi
say "the Pi's Python: $(chroot "$rootfs" /usr/bin/python3 --version 2>&1)"

# 4. torch's aarch64 build reads the CPU id from sysfs (segfaults without it under qemu-user);
#    the Pi's /sys is this folder, not the host's (see testbed.py).
for cpu in 0 1; do   # cheap: written on every run
    d="$rootfs/sys/devices/system/cpu/cpu$cpu/regs/identification"
    mkdir -p "$d" && echo 0x00000000410fd083 > "$d/midr_el1"   # Cortex-A72 r0p3 (Raspberry Pi 4)
done
for f in online possible present; do echo 0-1 > "$rootfs/sys/devices/system/cpu/$f"; done

in_root() {  # in_root ROOTFS CMD...: run CMD inside a node's root filesystem, the checkout at ~/hat-ray
    unshare --mount --propagation private -- bash -c '
        set -e; r="$1"; shift
        mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"
        mkdir -p "$r/root/hat-ray"; mount --bind -o ro "$1" "$r/root/hat-ray"; shift
        cp /etc/resolv.conf "$r/etc/resolv.conf"
        # trust what the host trusts (a TLS-inspecting proxy in front of the package registries)
        cp /etc/ssl/certs/ca-certificates.crt "$r/etc/ssl/certs/ca-certificates.crt"
        exec chroot "$r" /usr/bin/env -i HOME=/root PATH=/root/hat-ray-venv/bin:/usr/bin:/bin LANG=C.UTF-8 \
            PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt "$@"
    ' in_root "$1" "$repo" "${@:2}"
}
in_pi() { in_root "$rootfs" "$@"; }

# 5. hat-ray's venv on the Pi
if step venv; then
    rm -f "$cache/.done-wheels" "$cache/.done-hat-ray"   # a new venv needs them again
    in_pi /usr/bin/python3 -m venv --clear "$venv"
    done_step venv
fi
site="$rootfs$venv/lib/python3.11/site-packages"
if step wheels; then
    # hat-ray's requirements, the head's Ray version and the Pi's torch (see pi_torch above)
    mapfile -t dep_list < <("$host_py" - "$repo/pyproject.toml" <<'EOF'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.startswith(("ray", "torch"))))
EOF
)
    target="$cache/wheels-target"
    rm -rf "$target"
    pip_platform=(--only-binary=:all: --implementation cp --python-version 3.11 --abi cp311)
    for glibc in 2014 _2_17 _2_24 _2_26 _2_27 _2_28 _2_31 _2_34 _2_35; do   # bookworm has glibc 2.36
        pip_platform+=(--platform "manylinux${glibc}_aarch64")
    done
    "$host_py" -m pip install -q --target "$target" "${pip_platform[@]}" "ray[default,tune]==$ray_version" \
        "torch==$pi_torch" "${dep_list[@]}" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    [[ -d "$target/torch" && -d "$target/ray" && -x "$target/bin/ray" ]] || die "pip could not fetch the aarch64 wheels (see above)"
    # console scripts (ray, ...): pip wrote the host's interpreter into their #! line
    mkdir -p "$rootfs$venv/bin"
    for f in "$target/bin/"*; do
        sed "1s|^#!.*|#!$venv/bin/python|" "$f" > "$rootfs$venv/bin/$(basename "$f")"
        chmod +x "$rootfs$venv/bin/$(basename "$f")"
    done
    rm -rf "$target/bin"
    cp -a "$target/." "$site/"
    rm -rf "$target"
    done_step wheels
fi
if step hat-ray; then
    # exactly deploy/README.md's install command, run on the emulated node: everything but hat-ray
    # is already there, so pip only checks the versions and installs hat-ray editable
    in_pi "$venv/bin/pip" install -q --disable-pip-version-check "ray[default,tune]==$ray_version" -e /root/hat-ray
    in_pi "$venv/bin/python" -c 'import platform, ray, torch, hat_ray; print("  the Pi imports ray", ray.__version__, "torch", torch.__version__, "on", platform.machine(), platform.python_version())' >&2
    done_step hat-ray
fi

# 6. another Ray version on x86 (a node that must be refused)
if step other-ray; then
    rm -rf "$cache/other-ray-venv"
    python3 -m venv "$cache/other-ray-venv"
    "$cache/other-ray-venv/bin/pip" install -q --disable-pip-version-check "ray==$other_ray" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    "$cache/other-ray-venv/bin/ray" --version >/dev/null || die "could not install ray==$other_ray"
    done_step other-ray
fi

# 7. another Python minor on x86, the head's Ray (a node that must be refused at match level minor):
#    a native (x86) Debian root filesystem, so its pip installs Ray's wheels at full speed
other_t0=$(date +%s)
if [[ "$(cat "$cache/.done-other-python-rootfs" 2>/dev/null)" != "$other_py_suite" ]]; then
    rm -f "$cache"/.done-other-python-*   # none yet, or built from another suite
fi
if step other-python-rootfs; then
    rm -f "$cache/.done-other-python-venv"
    rm -rf "$other_py_rootfs.tmp"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,procps \
        "$other_py_suite" "$other_py_rootfs.tmp" "$mirror" 2>&1 | sed -u 's/^/  debootstrap: /' \
        | grep -E 'Retrieving|Extracting|Configuring|Base system|E:' | awk 'NR % 25 == 1 || /Base system|E:/' >&2
    [[ -x "$other_py_rootfs.tmp/usr/bin/python3" ]] || die "debootstrap of $other_py_suite failed (see above)"
    rm -rf "$other_py_rootfs" && mv "$other_py_rootfs.tmp" "$other_py_rootfs"
    done_step other-python-rootfs
    echo "$other_py_suite" > "$cache/.done-other-python-rootfs"
fi
other_py="$(chroot "$other_py_rootfs" /usr/bin/python3 -c 'import platform; print(platform.python_version())')"
[[ "${other_py%.*}" != "$("$host_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ]] \
    || die "$other_py_suite's Python $other_py has the head's minor version: set HAT_RAY_TESTBED_OTHER_PYTHON_SUITE"
# the head's Ray version changed since: install it again
compgen -G "$other_py_rootfs$venv/lib/python3*/site-packages/ray-$ray_version.dist-info" >/dev/null \
    || rm -f "$cache/.done-other-python-venv"
if step other-python-venv; then
    in_root "$other_py_rootfs" /usr/bin/python3 -m venv --clear "$venv"
    in_root "$other_py_rootfs" "$venv/bin/pip" install -q --disable-pip-version-check --no-cache-dir \
        "ray[default]==$ray_version" 2>&1 | grep -v "^WARNING: Location" >&2 || true
    in_root "$other_py_rootfs" "$venv/bin/ray" --version >/dev/null || die "could not install ray[default]==$ray_version on Python $other_py"
    done_step other-python-venv
fi
say "the other-Python node: Python $other_py ($other_py_suite), Ray $ray_version ($(( $(date +%s) - other_t0 )) s)"

echo "{\"ray\": \"$ray_version\", \"torch\": \"$torch_version\", \"pi_torch\": \"$pi_torch\", \"other_ray\": \"$other_ray\", \"suite\": \"$suite\", \"other_python\": \"$other_py\", \"other_python_suite\": \"$other_py_suite\"}" > "$cache/testbed.json"
say "ready in $(( $(date +%s) - t_start )) s"
