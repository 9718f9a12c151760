#!/usr/bin/env bash
# The demo pipeline through a real SLURM cluster: a single-node cluster started on this machine.
# Not part of the default test run (it installs system packages and starts daemons; ~15 minutes).
#
#   bash tests/slurm/run.sh [LOCAL_RUN]
#
# 1. installs Debian's slurm-wlm and munge if missing, and the project with its `slurm` extra;
# 2. writes a slurm.conf for this machine (its cores and memory, one partition), starts munged,
#    slurmctld and slurmd;
# 3. runs the demo (config/config.yaml, device cpu: the node has no GPU) in a scratch folder through
#    `snakemake --profile workflow/profiles/slurm`;
# 4. checks that every job ran as a SLURM job (each job log names its SLURM_JOB_ID) and, given a
#    folder LOCAL_RUN where the same config ran locally (for example `python bench/pipeline.py --keep DIR`),
#    that every metrics file equals the local run's;
# 5. stops the daemons it started (also on failure).
#
# Debian's Slurm 22.05 runs here without slurmdbd, so there is no accounting: sacct fails, and the
# executor plugin is told to query job states with squeue (--slurm-status-command squeue). The
# profile itself keeps the plugin's default, sacct, for clusters that have accounting.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
LOCAL_RUN=${1:-}
WORK=${LVDR_SLURM_DIR:-$(mktemp -d /tmp/lvdr-slurm-XXXX)}
mkdir -p "$WORK"
say() { printf '[slurm test] %s\n' "$*"; }

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurm-wlm and munge"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
fi
make -s setup
.venv/bin/pip install -q --no-build-isolation -c requirements.lock -e ".[slurm]"
export PATH="$REPO/.venv/bin:$PATH" VIRTUAL_ENV="$REPO/.venv"

# --- a single-node cluster --------------------------------------------------------------------
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # leave 1 GB to the system
mkdir -p "$WORK/state" "$WORK/spool" /run/munge
chown munge:munge /run/munge
# Slurm's default location: the job steps' srun reads the config from there, whatever SLURM_CONF said
# at submission. An /etc/slurm/slurm.conf that this script did not write is left alone.
CONF=/etc/slurm/slurm.conf
if [ -f "$CONF" ] && ! grep -q "^# written by lvdr tests/slurm/run.sh" "$CONF"; then
    say "$CONF exists and was not written by this script: not replacing it"; exit 1
fi
mkdir -p /etc/slurm
cat > "$CONF" <<EOF
# written by lvdr tests/slurm/run.sh
ClusterName=lvdr
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/slurmctld.log
SlurmdLogFile=$WORK/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=600
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=lvdr Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$CONF"

stop() {
    say "stopping the daemons"
    for pid in "$WORK/slurmd.pid" "$WORK/slurmctld.pid"; do
        [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
    done
    [ -n "${MUNGED_STARTED:-}" ] && [ -f /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null || true
    rm -f "$CONF"  # this script wrote it (checked above)
}
trap stop EXIT

if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
    MUNGED_STARTED=1
fi
slurmctld
slurmd
for _ in $(seq 30); do
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null || true)
    [ "$state" = "idle" ] && break
    sleep 1
done
[ "$state" = "idle" ] || { say "node $NODE is '$state', not idle"; tail -20 "$WORK/slurmctld.log" "$WORK/slurmd.log"; exit 1; }
say "cluster up: node $NODE, $CPUS CPUs, $MEM_MB MB, partition lvdr ($WORK)"

# --- the demo through the SLURM profile -------------------------------------------------------
RUN="$WORK/run"
mkdir -p "$RUN/config"
cp config/config.yaml "$RUN/config/config.yaml"
start=$(date +%s)
snakemake -s "$REPO/Snakefile" --directory "$RUN" --profile workflow/profiles/slurm \
    --slurm-status-command squeue \
    --config device=cpu --jobs "$CPUS" results/report.html
say "pipeline through SLURM: $(( $(date +%s) - start )) s"

# --- every job ran as a SLURM job -------------------------------------------------------------
logs=$(find "$RUN/logs" -name '*.log' | sort)
missing=$(for f in $logs; do grep -q "(SLURM job [0-9]*)" "$f" || echo "$f"; done)
[ -z "$missing" ] || { say "job logs without a SLURM job id:"; echo "$missing"; exit 1; }
say "$(echo "$logs" | wc -l) job logs, each from a SLURM job: $(grep -oh "SLURM job [0-9]*" $logs | awk '{print $3}' | sort -n | tr '\n' ' ')"

# --- the same metrics as a local run ----------------------------------------------------------
if [ -n "$LOCAL_RUN" ]; then
    python - "$RUN" "$LOCAL_RUN" <<'EOF'
import json, sys
from pathlib import Path
slurm, local = Path(sys.argv[1]), Path(sys.argv[2])
files = sorted(p.relative_to(slurm) for p in slurm.glob("results/*/metrics.json"))
assert files, "no metrics.json in the SLURM run"
for rel in files:
    a, b = json.loads((slurm / rel).read_text()), json.loads((local / rel).read_text())
    for side in (a, b):
        side.pop("created", None)
    if a["methods"] != b["methods"]:
        sys.exit(f"{rel}: the SLURM run's metrics differ from the local run's")
    aucs = {m: (v.get("auc_bin") or {}).get("value") for m, v in a["methods"].items()}
    print(f"[slurm test] {rel}: equal to the local run's ({', '.join(f'{m} AUC {x:.3f}' for m, x in aucs.items() if x is not None)})")
EOF
fi
say "done"
