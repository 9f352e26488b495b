#!/usr/bin/env bash
# Multi-node training under SLURM: one torchrun per node, which starts one process per GPU and
# meets the other nodes through the c10d rendezvous on the first node.
#   sbatch --nodes 2 scripts/slurm_train.sh video_configs/i3d_r50_gct_k400_32f.yaml [--set key=value ...]
#SBATCH --job-name=seqctx
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --output=slurm-%j.out
set -euo pipefail
CONFIG=$1; shift
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
srun torchrun --nnodes "$SLURM_NNODES" --nproc_per_node "$GPUS_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:29500" --rdzv-id "$SLURM_JOB_ID" \
    -m seqctx train "$CONFIG" "$@"
