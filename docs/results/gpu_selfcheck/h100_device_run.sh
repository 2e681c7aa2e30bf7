#!/usr/bin/env bash
# The command run on the lent H100 on 26 Nov 2026 (device tool; semilearn, ruamel.yaml and progress wheels carried in .whl/,
# aim and wandb empty stand-ins). Self-check, overhead on CUDA, torchrun with one process, multiprocessing DDP on one GPU.
PY=${PY:-python3}; DEV=${DEV:-cuda}; BK=${BK:-nccl}; OUT=${OUT:-/tmp/out}
mkdir -p $OUT
if [ "$DEV" = cuda ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  mkdir -p /tmp/site/aim /tmp/site/wandb; touch /tmp/site/aim/__init__.py /tmp/site/wandb/__init__.py
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  t0=$(date +%s)
  timeout 300 $PY benchmark_configs/gpu_selfcheck.py --out /tmp/sc --budget 280 > $OUT/selfcheck.log 2>&1
  echo "selfcheck rc=$? $(( $(date +%s)-t0 )) s"; cp /tmp/sc/selfcheck.md /tmp/sc/selfcheck.json $OUT/; tail -25 $OUT/selfcheck.log
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
t0=$(date +%s)
timeout 100 $PY -m benchmark_configs.overhead --device $DEV --set net=wrn_28_2 img_size=32 batch_size=64 uratio=7 num_workers=4 \
  --breakdown --json $OUT/overhead_wrn.json > $OUT/overhead_wrn.log 2>&1
echo "overhead wrn rc=$? $(( $(date +%s)-t0 )) s"; tail -25 $OUT/overhead_wrn.log
C=benchmark_configs/embedded/rsmatch_digits.yaml
COMMON="--num_train_iter 20 --num_eval_iter 20 --num_log_iter 5 --device $DEV --dist_backend $BK --resume False --load_path None --overwrite True"
t0=$(date +%s)
timeout 60 torchrun --standalone --nproc_per_node 1 -m rsmatch_usb.train --c $C $COMMON --save_dir /tmp/ddp --save_name torchrun > $OUT/torchrun.log 2>&1
echo "torchrun rc=$? $(( $(date +%s)-t0 )) s"; grep -ohE "ranks in sync[^,]*|Use device: [^ ]+ \(gpu [^)]*\)|distributed=[A-Za-z]+|BEST_EVAL_ACC: [0-9.]+|rsmatch-train: error.*|Error.*" $OUT/torchrun.log | sort | uniq -c | tail -8
t0=$(date +%s)
timeout 60 $PY -m rsmatch_usb.train --c $C $COMMON --multiprocessing_distributed True --world_size 1 --rank 0 --dist_url tcp://127.0.0.1:29517 \
  --save_dir /tmp/ddp --save_name mpddp > $OUT/mpddp.log 2>&1
echo "mp-ddp rc=$? $(( $(date +%s)-t0 )) s"; grep -ohE "ranks in sync[^,]*|Use device: [^ ]+ \(gpu [^)]*\)|distributed=[A-Za-z]+|BEST_EVAL_ACC: [0-9.]+|rsmatch-train: error.*|Error.*" $OUT/mpddp.log | sort | uniq -c | tail -8
