#!/bin/bash
# Train a seqctx video model on SLURM until it is done: preempted or out of time, the run saves
# latest.pt at an iteration boundary, the job requeues itself and continues (`--resume auto`).
#
#   sbatch scripts/slurm_train.sh video_configs/i3d_r50_k400_32f.yaml [--set KEY=VALUE ...]
#
# One torchrun per node (c10d rendezvous on the first node), one process per GPU. Time limit:
# SLURM sends USR1 to this script SIGNAL_LEAD seconds before it (--signal=B:USR1@...); the script
# passes SIGTERM to the step, torchrun to every rank, the ranks agree on an iteration, save, exit 75,
# and the job is requeued. Preemption: SLURM's SIGTERM reaches the ranks the same way (the grace
# time, PreemptMode=REQUEUE, must cover one iteration and a save). A rank that dies (a lost GPU)
# makes torchrun restart the group from the newest checkpoint, up to --max-restarts times; what is
# lost is the iterations since that checkpoint (bound it with --set train.checkpoint_every=N).
#SBATCH --job-name=seqctx-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@180
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -uo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG [seqctx train options]}
shift
PYTHON=${PYTHON:-python}
GPUS=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
PORT=${MASTER_PORT:-29500}
# restarted groups meet in a fresh store on every node (pytorch/pytorch#135712)
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1

echo "$(date '+%F %T') job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST: $CONFIG $*"
requeue=0
stop() {  # $1: the signal this script got
    echo "$(date '+%F %T') $1: the run saves at its next iteration and stops; the job is requeued"
    requeue=1
    kill -TERM "$train" 2>/dev/null
}
trap 'stop USR1' USR1
trap 'stop TERM' TERM

srun --kill-on-bad-exit=0 "$PYTHON" -m torch.distributed.run \
    --nnodes "$SLURM_JOB_NUM_NODES" --nproc-per-node "$GPUS" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:$PORT" --rdzv-id "$SLURM_JOB_ID" \
    --max-restarts 3 --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout 170 \
    -m seqctx train "$CONFIG" --resume auto "$@" &
train=$!
code=0
while kill -0 "$train" 2>/dev/null; do  # a trapped signal ends `wait` early: wait again
    wait "$train"
    code=$?
done
if [ "$requeue" = 1 ] || [ "$code" = 75 ]; then
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$code"
