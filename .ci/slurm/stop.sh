#!/usr/bin/env bash
# Stop the one-node test cluster started by .ci/slurm/start.sh.
#
# Stops slurmd and slurmctld through their pid files, and munged only if
# start.sh started it. Jobs still running are killed with the node. Idempotent.
set -euo pipefail

state_dir=/var/spool/convscope-slurm

_pid_alive() {
    local pid
    [ -s "$1" ] || return 1
    pid="$(cat "$1")"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] \
        && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]  # a zombie is not alive
}

_stop() {
    local pid i
    if ! _pid_alive "$1" "$2"; then
        echo "slurm stop: $2 not running"
        return 0
    fi
    pid="$(cat "$1")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
        if ! _pid_alive "$1" "$2"; then
            echo "slurm stop: $2 stopped"
            return 0
        fi
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null || true
    echo "slurm stop: $2 killed after 30 s"
}

_stop "$state_dir/slurmd.pid" slurmd
_stop "$state_dir/slurmctld.pid" slurmctld
if [ -e "$state_dir/munged.started-by-us" ]; then
    _stop /run/munge/munged.pid munged
    rm -f "$state_dir/munged.started-by-us"
fi
