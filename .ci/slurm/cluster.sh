#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for testing profiles/slurm against a real SLURM.
#
#   .ci/slurm/cluster.sh start    install slurm-wlm + munge when missing, write the config, start
#                                 munged, slurmctld and slurmd, wait until the node is idle
#   .ci/slurm/cluster.sh stop     cancel its jobs, stop exactly the daemons `start` recorded
#   .ci/slurm/cluster.sh status   say what runs
#
# Must run as root (it installs packages and writes /etc/slurm). Any failure prints why and exits
# non-zero: a cluster that did not start never looks like one that did.
#
# Facts this relies on (Debian bookworm, slurm-wlm 22.05, snakemake-executor-plugin-slurm 2.8):
# - the config must sit at /etc/slurm/slurm.conf: the plugin's job step strips SLURM_CONF before
#   its inner `srun`, which then cannot find an exported config;
# - there is no slurmdbd, so `sacct` fails; the profile therefore uses `squeue` for job status, which
#   only sees a finished job while slurmctld remembers it: MinJobAge must stay >= 3x the profile's
#   `slurm-init-seconds-before-status-checks` (else the plugin falls back to sacct and hangs);
# - the node has one fake GPU (gres.conf File=/dev/null), so `--gpus=1` requests are scheduled and
#   the job sees CUDA_VISIBLE_DEVICES=0 without any GPU hardware;
# - the node is declared with at least REPLICATE_SLURM_CPUS CPUs and REPLICATE_SLURM_MEM_MB memory
#   (defaults 8 and 65536; more when the machine has more) so the profile's real per-rule requests
#   fit on a small CI machine; SlurmdParameters=config_overrides makes slurmd accept that. Nothing
#   is pinned (TaskPlugin=task/none), so the oversubscription only costs time.
set -euo pipefail

STATE="${REPLICATE_SLURM_STATE:-/tmp/replicate-slurm}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
MARKER="# Written by replicate/.ci/slurm/cluster.sh (test cluster); safe to delete."
MUNGE_SOCKET=/run/munge/munge.socket.2
T="timeout -k 5"  # every SLURM/munge client call is bounded: a stuck call must not hang CI

die() {
    echo "cluster.sh: ERROR: $*" >&2
    exit 1
}
log() { echo "cluster.sh: $*" >&2; }

alive() { # alive PIDFILE NAME: the recorded process exists and still is NAME (no PID reuse)
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

install_packages() {
    local missing=()
    command -v munged >/dev/null || missing+=(munge)
    for bin in slurmctld slurmd sbatch; do
        command -v "$bin" >/dev/null || { missing+=(slurm-wlm); break; }
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "SLURM is not installed (${missing[*]} missing) and I am not root"
    command -v apt-get >/dev/null || die "SLURM is not installed and there is no apt-get"
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! $T 600 apt-get install -y --no-install-recommends "${missing[@]}" >"$STATE/apt.log" 2>&1
    then
        $T 600 apt-get update >>"$STATE/apt.log" 2>&1 || true
        $T 600 apt-get install -y --no-install-recommends "${missing[@]}" >>"$STATE/apt.log" 2>&1 ||
            { tail -20 "$STATE/apt.log" >&2; die "apt-get install ${missing[*]} failed"; }
    fi
}

write_config() {
    if [ -e "$CONF" ] && ! grep -qxF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to overwrite a real config"
    fi
    local cpus mem real_mem
    cpus=$(nproc)
    real_mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024))
    cpus=$((cpus > ${REPLICATE_SLURM_CPUS:-8} ? cpus : ${REPLICATE_SLURM_CPUS:-8}))
    mem=$((real_mem > ${REPLICATE_SLURM_MEM_MB:-65536} ? real_mem : ${REPLICATE_SLURM_MEM_MB:-65536}))
    mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d"
    cat >"$STATE/task_prolog.sh" <<EOF
#!/bin/sh
# Runs in every task's environment: records what GPU the task was given.
echo "job=\${SLURM_JOB_ID} step=\${SLURM_STEP_ID} CUDA_VISIBLE_DEVICES=\${CUDA_VISIBLE_DEVICES-unset}" \\
    >>"$STATE/task_env.log" 2>/dev/null || true
EOF
    chmod 755 "$STATE/task_prolog.sh"
    cat >"$CONF" <<EOF
$MARKER
ClusterName=replicate
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog=$STATE/task_prolog.sh
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
ReturnToService=2
# squeue sees a finished job for MinJobAge seconds: >= 3x slurm-init-seconds-before-status-checks,
# and the test reads every job of a whole run back from squeue, so as long as SLURM allows (~18 h).
MinJobAge=65533
SlurmdParameters=config_overrides
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.daemon.pid
SlurmdPidFile=$STATE/slurmd.daemon.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    # One fake GPU: no device file behind it, but SLURM schedules it and sets CUDA_VISIBLE_DEVICES.
    printf '%s\nNodeName=localhost Name=gpu File=/dev/null\n' "$MARKER" >"$CONF_DIR/gres.conf"
}

start_munge() {
    if alive "$STATE/munged.pid" munged; then return 0; fi # ours, from an earlier start
    if $T 5 munge -n </dev/null 2>/dev/null | $T 5 unmunge >/dev/null 2>&1; then
        log "munged already answers on $MUNGE_SOCKET (not started by me; left alone)"
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none ||
            die "could not create a munge key"
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    # setpriv execs (no extra parent), so $! is munged itself.
    setsid setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F \
        </dev/null >"$STATE/munged.out" 2>&1 &
    echo $! >"$STATE/munged.pid"
    for _ in $(seq 50); do
        if $T 5 munge -n </dev/null 2>/dev/null | $T 5 unmunge >/dev/null 2>&1; then return 0; fi
        kill -0 "$(cat "$STATE/munged.pid")" 2>/dev/null || break
        sleep 0.2
    done
    cat "$STATE/munged.out" >&2
    die "munged did not come up (see above and /var/log/munge/munged.log)"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, writes $CONF_DIR)"
    mkdir -p "$STATE"
    if alive "$STATE/slurmctld.pid" slurmctld && alive "$STATE/slurmd.pid" slurmd; then
        log "already running (slurmctld $(cat "$STATE/slurmctld.pid"), slurmd $(cat "$STATE/slurmd.pid"))"
        return 0
    fi
    install_packages
    if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null; then
        die "a slurmctld/slurmd not started by this script is running; stop it first"
    fi
    write_config
    start_munge
    setsid /usr/sbin/slurmctld -D -i -f "$CONF" </dev/null >"$STATE/slurmctld.out" 2>&1 &
    echo $! >"$STATE/slurmctld.pid"
    for _ in $(seq 50); do
        $T 5 scontrol ping 2>/dev/null | grep -q "is UP" && break
        kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null || break
        sleep 0.2
    done
    if ! $T 5 scontrol ping 2>/dev/null | grep -q "is UP"; then
        tail -20 "$STATE/slurmctld.out" "$STATE/slurmctld.log" >&2 2>/dev/null || true
        stop >/dev/null 2>&1 || true
        die "slurmctld did not come up (port 6817 taken? see above)"
    fi
    setsid /usr/sbin/slurmd -D -N localhost -f "$CONF" </dev/null >"$STATE/slurmd.out" 2>&1 &
    echo $! >"$STATE/slurmd.pid"
    local state=""
    for _ in $(seq 150); do
        state=$($T 5 sinfo -h -N -n localhost -o %t 2>/dev/null || true)
        [ "$state" = idle ] && break
        kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null || break
        sleep 0.2
    done
    if [ "$state" != idle ]; then
        tail -20 "$STATE/slurmd.out" "$STATE/slurmd.log" >&2 2>/dev/null || true
        $T 5 scontrol show node localhost >&2 || true
        stop >/dev/null 2>&1 || true
        die "node localhost is '${state:-unknown}', not idle (port 6818 taken? see above)"
    fi
    log "up: munged $(cat "$STATE/munged.pid" 2>/dev/null || echo external)," \
        "slurmctld $(cat "$STATE/slurmctld.pid"), slurmd $(cat "$STATE/slurmd.pid"); state in $STATE"
}

stop() {
    # Cancel this cluster's jobs first: their slurmstepd processes outlive slurmd otherwise.
    if alive "$STATE/slurmctld.pid" slurmctld; then
        $T 10 scancel --partition=debug 2>/dev/null || true
        for _ in $(seq 25); do
            [ -z "$($T 5 squeue -h -t R,CG -o %i 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    local failed=0
    for daemon in slurmd slurmctld munged; do
        local pidfile="$STATE/$daemon.pid"
        if alive "$pidfile" "$daemon"; then
            local pid
            pid=$(cat "$pidfile")
            kill -TERM "$pid"
            for _ in $(seq 50); do
                alive "$pidfile" "$daemon" || break
                sleep 0.2
            done
            if alive "$pidfile" "$daemon"; then
                log "$daemon ($pid) ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" || failed=1
            fi
            log "stopped $daemon ($pid)"
        fi
        rm -f "$pidfile"
    done
    return $failed
}

status() {
    local rc=0
    for daemon in munged slurmctld slurmd; do
        if alive "$STATE/$daemon.pid" "$daemon"; then
            echo "$daemon: running, pid $(cat "$STATE/$daemon.pid")"
        else
            echo "$daemon: not running (started by this script)"
            [ "$daemon" = munged ] || rc=1
        fi
    done
    [ $rc -eq 0 ] && $T 5 sinfo -N -o "%N %t %c %m %G" || true
    return $rc
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
