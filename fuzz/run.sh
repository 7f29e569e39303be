#!/usr/bin/env bash
# Builds the fuzz targets with cargo-afl (AFL++ on stable Rust, installed
# from crates.io when missing) and runs each for FUZZ_SECS seconds on its
# corpus (fuzz/corpus/<target>/), FUZZ_JOBS at a time. Fails if any target
# crashed or hung, or if a seed of the corpus does; prints each such input
# and its panic.
#
#   fuzz/run.sh                        every target, FUZZ_SECS (15) each
#   FUZZ_SECS=600 fuzz/run.sh emitter  one target, longer
#   FUZZ_BUILD_ONLY=1 fuzz/run.sh      install and build, run nothing
#                                      (CI builds while its tests run)
#   FUZZ_KEEP=1 fuzz/run.sh emitter    then replace its corpus with the
#                                      seeds and what it found, minimised
#                                      (afl-cmin; after a minute that is
#                                      hundreds of files: pick from them)
#
# Findings go to target/fuzz/out/<target>/default/ (crashes/, hangs/,
# queue/); replay one with
#   target/fuzz/debug/civicpulse-fuzz <target> < FILE
# (FUZZ_TARGET_DIR, an absolute path, moves target/fuzz elsewhere.)
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
shopt -s nullglob
cd "$(dirname "$0")"

AFL_VERSION=0.18.2
secs="${FUZZ_SECS:-15}"
jobs="${FUZZ_JOBS:-$(nproc)}"
# Its own target dir: cargo-afl's flags leave nothing of target/debug to reuse.
target_dir="${FUZZ_TARGET_DIR:-../target/fuzz}"
out="$target_dir/out"
bin="$target_dir/debug/civicpulse-fuzz"

# cargo-afl builds AFL++ (make and a C compiler) when it is installed.
if ! cargo afl --version 2>/dev/null | grep -q "cargo-afl $AFL_VERSION "; then
  echo "fuzz: installing cargo-afl $AFL_VERSION"
  cargo install --quiet --locked cargo-afl --version "$AFL_VERSION"
fi

# The app's locked versions (cargo drops what this crate does not use),
# so that what is fuzzed is what ships, and a dependency added to the app
# needs nothing done here.
cp ../Cargo.lock Cargo.lock

# cargo-afl compiles everything at opt-level 3 in one codegen unit; here
# that build took twice as long as an unoptimised one in 16 units (and
# opt-level 1 over twice its CPU time), while unoptimised targets still
# run thousands of inputs a second: the better trade for runs of seconds.
echo "fuzz: cargo afl build"
AFL_OPT_LEVEL="${AFL_OPT_LEVEL:-0}" RUSTFLAGS="-C codegen-units=16" CARGO_PROFILE_DEV_DEBUG=false CARGO_INCREMENTAL=0 \
  cargo afl build --quiet --target-dir "$target_dir"

[[ ${FUZZ_BUILD_ONLY:-} == 1 ]] && exit 0

all=$("$bin" 2>&1 | sed -n 's/.*targets: //p' || true)
targets=("$@")
((${#targets[@]})) || read -ra targets <<<"$all"

# No screen; no CPU pinning (other jobs share the cores); and a machine
# whose core dumps go to a program still reports crashes to AFL.
export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1

# Runs the target once on a file, printing what it says; fails as it does.
# (In a shell of its own whose stderr is dropped: bash reports an abort.)
replay() {
  RUST_BACKTRACE=0 bash -c 'timeout 10 "$0" "$1" <"$2" 2>&1; exit $?' "$bin" "$1" "$2" 2>/dev/null
}

run() {
  local target=$1
  [[ -d corpus/$target ]] || { echo "fuzz: no corpus/$target (targets: $all)" >&2; return 1; }
  rm -rf "${out:?}/$target"
  local log="$out/$target.log" seed
  # afl-fuzz only warns about a seed that crashes, and goes on without it.
  for seed in "corpus/$target"/*; do
    if ! replay "$target" "$seed" >"$log"; then
      echo "seed ${seed#corpus/} fails" >>"$log"
      return 1
    fi
  done
  # A 1 s timeout: every input is small, so an input that takes longer
  # loops or is quadratic.
  cargo afl fuzz -V "$secs" -t 1000 -i "corpus/$target" -o "$out/$target" -- "$bin" "$target" >"$log" 2>&1
}

mkdir -p "$out"
echo "fuzz: ${targets[*]} for ${secs}s each, $jobs at a time"
pids=()
for target in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  run "$target" &
  pids+=("$!")
done

failed=0
for i in "${!targets[@]}"; do
  target=${targets[$i]}
  status=0
  wait "${pids[$i]}" || status=$?
  dir="$out/$target/default"
  stats="$dir/fuzzer_stats"
  if ((status)) || [[ ! -f $stats ]]; then
    echo "fuzz: $target: failed (exit $status); the end of its log:"
    tail -n 15 "$out/$target.log" | sed 's/\x1b\[[0-9;]*m//g'
    failed=1
    continue
  fi
  execs=$(awk -F': ' '/^execs_done/ { print $2 }' "$stats")
  paths=$(awk -F': ' '/^corpus_count/ { print $2 }' "$stats")
  findings=("$dir"/crashes/id:* "$dir"/hangs/id:*)
  if ((${#findings[@]})); then
    failed=1
    for finding in "${findings[@]}"; do
      echo "fuzz: $target: ${finding#"$out/"}; the input, base64: $(base64 -w0 "$finding")"
      { replay "$target" "$finding" || true; } | grep -A2 -m1 'panicked' ||
        echo "  (no panic when replayed: a hang, or a signal)"
    done
  else
    echo "fuzz: $target: $execs runs, $paths inputs in its queue, no crash"
  fi
  if [[ ${FUZZ_KEEP:-} == 1 ]]; then
    rm -rf "$out/$target.min"
    cargo afl cmin -i "$dir/queue" -o "$out/$target.min" -- "$bin" "$target" >"$out/$target.cmin.log" 2>&1
    rm -f "corpus/$target"/*
    for input in "$out/$target.min"/*; do
      cp "$input" "corpus/$target/$(sha1sum <"$input" | cut -c1-16)"
    done
    echo "fuzz: $target: corpus minimised to $(ls "corpus/$target" | wc -l) inputs"
  fi
done
exit "$failed"
