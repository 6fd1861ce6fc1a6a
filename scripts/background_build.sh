#!/usr/bin/env bash
# Starts, or resumes, scripts/build_default_model.sh in the background, in the first minutes of a session: from a
# git worktree of its own (so the checkout you work in can change), with its own venv (the [train] and [search]
# extras: torch from constraints.txt, faiss for mining negatives), under nohup and nice 19, appending to
# runs/build.log there. Idempotent: a build already running is left alone; a missing worktree or venv (a machine
# that came up wiped) is made again first.
#
#   scripts/background_build.sh                    # the stages in STAGES below, teacher to candidates
#   scripts/background_build.sh teacher,distill    # just these (build_default_model.sh's ONLY)
#   WORKTREE=/elsewhere scripts/background_build.sh
#
# Pause it around a benchmark with `kill -STOP PID`, resume with `kill -CONT PID` (PID: the python process it
# prints). Its stage log is WORKTREE/runs/build/stages.log; append its new lines to
# docs/results/build-default-model.log to commit them.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKTREE=${WORKTREE:-$(cd .. && pwd)/wt-accuracy}
STAGES=${1:-teacher,distill,negatives,base-e,finetune-a,average-a,finetune-repair,average-repair,choose,calibrate,int8,evaluate,verdict,candidates}

if pgrep -f "build_default_model.sh" > /dev/null; then
  echo "a build is running already:" && pgrep -fa "zhembed (distill|finetune|mine-negatives|import-e5|export)" || true
  exit 0
fi
git worktree prune
if [[ ! -d $WORKTREE ]]; then
  git worktree add --detach "$WORKTREE" HEAD
fi
git -C "$WORKTREE" checkout -q --detach "$(git rev-parse HEAD)"
if ! "$WORKTREE/.venv/bin/python" -c "import faiss, torch" 2> /dev/null; then
  echo "installing the [train] and [search] extras into $WORKTREE/.venv (a few minutes)"
  python3 -m venv "$WORKTREE/.venv"
  "$WORKTREE/.venv/bin/pip" install -q -e "$WORKTREE[train,search]" -c constraints.txt
fi
cd "$WORKTREE"
mkdir -p runs
PATH=$PWD/.venv/bin:$PATH ONLY=$STAGES nohup nice -n 19 scripts/build_default_model.sh >> runs/build.log 2>&1 &
echo "started the stages $STAGES at $(git log -1 --format=%h) in $WORKTREE (pid $!); log: $WORKTREE/runs/build.log"
