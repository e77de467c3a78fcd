#!/usr/bin/env bash
# Run a command inside a fresh network namespace that has only the loopback interface.
#
# Ray 2.60 binds its GCS, raylet and workers to every interface whatever node address it is given, so the
# test suite's Ray instances would otherwise be reachable from the network (token authentication still
# guards them). Inside the namespace the only interface is 127.0.0.1/::1: nothing a test starts can be
# reached from, or reach, another host. Creating a namespace needs root (as in CI) or unprivileged user
# namespaces; where neither works, or CONTRIBSHAP_NO_NETNS=1, the command runs on the host network and a
# note says so.
#
# Usage: tests/isolated.sh COMMAND [ARG...]      e.g. tests/isolated.sh .venv/bin/python -m pytest -q
set -euo pipefail
if [ "$#" -eq 0 ]; then
    echo "usage: tests/isolated.sh COMMAND [ARG...]" >&2
    exit 2
fi
if [ "${CONTRIBSHAP_NO_NETNS:-0}" != "1" ] && command -v unshare >/dev/null && command -v ip >/dev/null \
        && unshare -n true 2>/dev/null; then
    echo "tests/isolated.sh: running in a loopback-only network namespace" >&2
    exec unshare -n -- bash -c 'ip link set lo up && exec "$@"' isolated "$@"
fi
echo "tests/isolated.sh: note: no network namespace (CONTRIBSHAP_NO_NETNS=1, or not permitted: needs root, unshare and ip);" \
     "running on the host network; Ray stays on 127.0.0.1 with token auth" >&2
exec "$@"
