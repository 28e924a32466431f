#!/usr/bin/env bash
# Start Ray on one hat-ray node, declaring THIS machine's device resource and labels.
#
#   bash deploy/start-node.sh --head [more `ray start` flags]              # the head node
#   bash deploy/start-node.sh --address=HEAD_IP:6379 [more flags]          # a worker (Pi, GPU box)
#
# The device comes from a host-local file, ~/.hat-ray/node.env (or $HAT_RAY_NODE_ENV): copy the
# deploy/nodes/<device>.env that fits the machine there once. The cluster launcher's local
# provider has a single worker node type (one start command for every worker), so the per-device
# part has to live on each host. HAT_RAY_DRY_RUN=1 prints the `ray start` arguments, one per
# line, instead of running it.
set -euo pipefail

env_file="${HAT_RAY_NODE_ENV:-$HOME/.hat-ray/node.env}"
if [[ ! -f "$env_file" ]]; then
    echo "start-node.sh: $env_file does not exist: copy the deploy/nodes/<device>.env matching this" \
         "machine there (see deploy/README.md)" >&2
    exit 2
fi
set -a  # every assignment in the file is exported (RAY_AUTH_MODE, RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL, ...)
# shellcheck source=/dev/null
. "$env_file"
set +a
if [[ -z "${HAT_RAY_RESOURCES:-}" ]]; then
    echo "start-node.sh: $env_file sets no HAT_RAY_RESOURCES (e.g. HAT_RAY_RESOURCES='{\"device:rpi4\": 1}')" >&2
    exit 2
fi
# The launcher runs commands with OMP_NUM_THREADS=1; Ray's workers would inherit it. Device
# profiles and scorers set their own torch thread counts, so leave the default alone.
unset OMP_NUM_THREADS

args=(start "--resources=$HAT_RAY_RESOURCES")
[[ -n "${HAT_RAY_LABELS:-}" ]] && args+=("--labels=$HAT_RAY_LABELS")
[[ -n "${HAT_RAY_NUM_CPUS:-}" ]] && args+=("--num-cpus=$HAT_RAY_NUM_CPUS")
[[ -n "${HAT_RAY_OBJECT_STORE_MEMORY:-}" ]] && args+=("--object-store-memory=$HAT_RAY_OBJECT_STORE_MEMORY")
if [[ "${1:-}" == "--head" ]]; then
    shift
    # The dashboard (and its Jobs API) stays on loopback: reach it through an SSH tunnel.
    args+=(--head --port=6379 --dashboard-host=127.0.0.1)
fi
args+=("$@")

governor=/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor
if [[ -r "$governor" && "$(<"$governor")" != "performance" ]]; then
    echo "start-node.sh: warning: the CPU governor is '$(<"$governor")', not 'performance':" \
         "latency measured on this node will drift with the clock (see deploy/README.md)" >&2
fi

if [[ -n "${HAT_RAY_DRY_RUN:-}" ]]; then
    printf '%s\n' "${args[@]}"
    exit 0
fi
exec ray "${args[@]}"
