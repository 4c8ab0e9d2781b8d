#!/usr/bin/env bash
# A real single-node SLURM (Debian's munge, slurmctld, slurmd) with one fake GPU, and one
# train/test cell of the .test grid and one of its screen runs through `snakemake --profile
# profiles/slurm`: its GPU jobs (train, infer, infer_screen) land on the gpu partition with a GPU,
# its CPU jobs (segment_real and segment_screen with the classical backend, features_real,
# evaluate, screen_reference, screen_run) on the cpu partition without. Needs root and apt-get.
#
#   bash tests/slurm/run.sh [TARGET ...]      (default: one run's scores.parquet, one screen run)
#
# VSGRID_SLURM_WORKDIR names the working directory (default: a new one in /tmp); what it already
# holds counts as done. VSGRID_SLURM_FORCERUN names rules to run again there all the same (what
# they feed reruns too): tests/test_slurm.py starts from a finished .test grid and forces train
# and screen_reference, so that only the rules it checks go through SLURM.
#
# The launcher gets its own environment (.venv-slurm: pyproject's `cluster` group), the jobs run
# `vsgrid` from .venv, as on a cluster.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${VSGRID_SLURM_WORKDIR:-$(mktemp -d /tmp/vsgrid-slurm.XXXXXX)}
HOST=$(hostname -s)
TARGETS=("$@")
FORCERUN=()
[ -z "${VSGRID_SLURM_FORCERUN:-}" ] || read -ra FORCERUN <<< "--forcerun $VSGRID_SLURM_FORCERUN"
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(results/runs/lung-nontoxic.dapi.s0/lung-toxic/scores.parquet
                                     results/screen/runs/lung-nontoxic.dapi.s0/lung.wells.parquet)

say() { echo "[slurm-test] $*"; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if [ ! -x "$ROOT/.venv-slurm/bin/snakemake" ]; then
    say "building the launcher environment .venv-slurm"
    python3 -m venv "$ROOT/.venv-slurm"
    mapfile -t CLUSTER < <(python3 -c 'import tomllib,sys; print("\n".join(tomllib.load(open(sys.argv[1],"rb"))["dependency-groups"]["cluster"]))' "$ROOT/pyproject.toml")
    "$ROOT/.venv-slurm/bin/pip" install -q "${CLUSTER[@]}" 2>&1 | grep -v "^WARNING: Location" || true
fi

say "configuring SLURM on $HOST (partitions cpu and gpu, 2 CPUs, one gres gpu:a100)"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=vsgrid-test
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SwitchType=switch/none
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
MinJobAge=600
ReturnToService=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=12000 Gres=gpu:a100:1 State=UNKNOWN
PartitionName=cpu Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
CONF
echo "NodeName=$HOST Name=gpu Type=a100 File=/dev/null" > /etc/slurm/gres.conf

[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; chmod 400 /etc/munge/munge.key; }
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 2>/dev/null || munged --force
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
slurmctld -c -i
slurmd -c
for _ in $(seq 60); do
    state=$(sinfo -h -N -o %t 2>/dev/null | head -1)
    [ "$state" = idle ] && break
    sleep 1
done
[ "$state" = idle ] || { say "node did not come up (state: ${state:-none})"; tail -20 /var/log/slurm/slurmd.log /var/log/slurm/slurmctld.log; exit 1; }
say "node $HOST is idle"

say "test profile from profiles/slurm: no account (no accounting here), squeue for status, small memory"
PROFILE="$WORK/profile"
mkdir -p "$PROFILE"
"$ROOT/.venv/bin/python" - "$ROOT/profiles/slurm/config.yaml" "$PROFILE/config.yaml" <<'PY'
import sys, yaml
profile = yaml.safe_load(open(sys.argv[1]))
profile["default-resources"].pop("slurm_account")
for rule in ("segment_real", "segment_screen"):  # the .test grid segments with the classical backend: CPU work
    profile["set-resources"].pop(rule)
profile["default-resources"].update(mem_mb=1000, runtime=30)
rules = ["store", "train", "infer", "segment_real", "features_real", "rank_features", "evaluate", "tables", "figures",
         "screen_store", "infer_screen", "segment_screen", "screen_reference", "screen_run"]
for rule in rules:
    profile["set-resources"].setdefault(rule, {})
    profile["set-resources"][rule] = {**profile["set-resources"][rule], "mem_mb": 1500, "runtime": 30}
profile.update({"jobs": 2, "slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 1,
                "seconds-between-status-checks": 2, "slurm-keep-successful-logs": True, "retries": 0})
yaml.safe_dump(profile, open(sys.argv[2], "w"), sort_keys=False)
PY

say "running ${TARGETS[*]} in $WORK"
cd "$WORK"
PATH="$ROOT/.venv/bin:$PATH" "$ROOT/.venv-slurm/bin/snakemake" "${TARGETS[@]}" "${FORCERUN[@]}" --profile "$PROFILE" --snakefile "$ROOT/workflow/Snakefile" \
    --directory "$WORK" --configfile "$ROOT/.test/config.yaml"

job_of() {  # the SLURM job id of a rule's job; nothing when the targets needed none
    local log
    [ -d "$WORK/results/slurm_logs/rule_$1" ] || return 0
    log=$(find "$WORK/results/slurm_logs/rule_$1" -name '*.log' | head -1)
    [ -n "$log" ] || { say "no SLURM log of rule $1"; exit 1; }
    basename "$log" .log
}
say "checking that the GPU rules were submitted with --gpus, the CPU rules without"
for rule in train infer infer_screen; do
    job=$(job_of "$rule")
    [ -n "$job" ] || { say "rule $rule: no job (the targets need none)"; continue; }
    details=$(scontrol show job "$job")
    echo "$details" | grep -Eq "TresPerJob=gres/gpu:a100:1|TresPerJob=gres:gpu:a100:1|gres/gpu" || { say "job $job of $rule has no GPU: $details"; exit 1; }
    echo "$details" | grep -q "Partition=gpu" || { say "job $job of $rule did not run on the gpu partition"; exit 1; }
    say "rule $rule: job $job on partition gpu with a GPU"
done
for rule in evaluate features_real segment_real segment_screen screen_reference screen_run; do
    job=$(job_of "$rule")
    [ -n "$job" ] || { say "rule $rule: no job (the targets need none)"; continue; }
    details=$(scontrol show job "$job")
    echo "$details" | grep -Eq "TresPerJob=[^ ]*gpu|gres/gpu|Partition=gpu" && { say "job $job of $rule asked for a GPU: $details"; exit 1; }
    echo "$details" | grep -q "Partition=cpu" || { say "job $job of $rule did not run on the cpu partition"; exit 1; }
    say "rule $rule: job $job on partition cpu without a GPU"
done
for target in "${TARGETS[@]}"; do
    [ -s "$WORK/$target" ] || { say "missing $target"; exit 1; }
done
say "passed"
