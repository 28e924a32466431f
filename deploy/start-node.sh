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
#
# Every node also gets the labels arch=<uname -m> and python=<its Python version>, read here (not
# from the file), so `hat-ray cluster status` shows what each node really runs. Optional settings
# in node.env: HAT_RAY_PORT (the head's GCS port, default 6379), HAT_RAY_DASHBOARD_PORT (default
# 8265), HAT_RAY_TEMP_DIR (Ray's session folder, default /tmp/ray).
# A node whose Ray or Python version the cluster refuses exits with code 2 and one line saying so.
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

py_version="$(python3 -c 'import platform; print(platform.python_version())' 2>/dev/null || echo unknown)"
labels="${HAT_RAY_LABELS:-}"
[[ ",$labels" == *",arch="* ]] || labels="${labels:+$labels,}arch=$(uname -m)"
[[ ",$labels" == *",python="* ]] || labels="$labels,python=$py_version"

args=(start "--resources=$HAT_RAY_RESOURCES" "--labels=$labels")
[[ -n "${HAT_RAY_NUM_CPUS:-}" ]] && args+=("--num-cpus=$HAT_RAY_NUM_CPUS")
[[ -n "${HAT_RAY_OBJECT_STORE_MEMORY:-}" ]] && args+=("--object-store-memory=$HAT_RAY_OBJECT_STORE_MEMORY")
[[ -n "${HAT_RAY_TEMP_DIR:-}" ]] && args+=("--temp-dir=$HAT_RAY_TEMP_DIR")
if [[ "${1:-}" == "--head" ]]; then
    shift
    # The dashboard (and its Jobs API) stays on loopback: reach it through an SSH tunnel.
    args+=(--head "--port=${HAT_RAY_PORT:-6379}" --dashboard-host=127.0.0.1)
    [[ -n "${HAT_RAY_DASHBOARD_PORT:-}" ]] && args+=("--dashboard-port=$HAT_RAY_DASHBOARD_PORT")
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
# Ray refuses a node whose Ray version (or Python version, to the match level) differs from the
# cluster's with a traceback; keep its output, and end with one line that names the fix.
err="$(mktemp)"
trap 'rm -f "$err"' EXIT
status=0
ray "${args[@]}" 2> >(tee "$err" >&2) || status=$?
wait  # for tee
if [[ $status -ne 0 ]] && grep -q "Version mismatch" "$err"; then
    # Ray's message: "The cluster was started with:\n    Ray: X\n    Python: Y\n This process ..."
    started="$(grep -m1 -A2 "cluster was started with" "$err")"
    cluster_ray="$(sed -n 's/^.*Ray: *\([^ ]*\).*$/\1/p' <<<"$started" | head -n1)"
    cluster_py="$(sed -n 's/^.*Python: *\([^ ]*\).*$/\1/p' <<<"$started" | head -n1)"
    cluster="another version"
    [[ -n "$cluster_ray" && -n "$cluster_py" ]] && cluster="Ray $cluster_ray / Python $cluster_py"
    echo "start-node.sh: error: the cluster refused this node: it runs Ray $(ray --version 2>/dev/null | awk '{print $NF}')" \
         "/ Python $py_version, the cluster $cluster; install the cluster's Ray (and Python" \
         "major.minor) here, see deploy/README.md" >&2
    exit 2
fi
exit $status
