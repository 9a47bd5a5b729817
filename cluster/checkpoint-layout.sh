# Sourced by cluster/albef-launch and cluster/slurm/pretrain.sbatch: what the latest checkpoint of
# an output directory says about the job's layout (no Swift needed on the launching node).

# The step of OUT's latest checkpoint (0: none).
albef_checkpoint_step() {
  local s
  s=$(sed -n 's/.*step_0*\([0-9][0-9]*\).*/\1/p' "$1/checkpoints/latest" 2>/dev/null || true)
  echo "${s:-0}"
}

# Slots (ranks × accum_steps) of OUT's latest checkpoint's layout; empty if none.
albef_checkpoint_slots() {
  local state
  state="$1/checkpoints/$(cat "$1/checkpoints/latest" 2>/dev/null || true)/state.json"
  [ -f "$state" ] || return 0
  tr -d '\n ' <"$state" | sed -n 's/.*"layout":{"accumSteps":\([0-9]*\),"batchSize":[0-9]*,"ranks":\([0-9]*\)}.*/\1 \2/p' |
    awk '{print $1 * $2}'
}

# The largest world size ≤ N that splits the checkpoint's slots (the job's global batch stays
# what it was); N itself without a checkpoint.
albef_fit_world_size() {
  local n="$1" p m
  p=$(albef_checkpoint_slots "$2")
  [ -n "$p" ] || { echo "$n"; return 0; }
  m="$n"; while [ $((p % m)) -ne 0 ]; do m=$((m - 1)); done
  echo "$m"
}
