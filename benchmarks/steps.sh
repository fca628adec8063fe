# Shared by the benchmark scripts (`source "$here/steps.sh"` once `$work` is set):
#   pk ARGS...        pretrainkit on one thread (the fastest on this shared 2-core machine);
#   run NAME CMD...   run CMD once: skipped when WORK/logs/NAME.json exists (a finished step),
#                     else its output is kept there, written whole or not at all.
pk() { python3 -m pretrainkit "$@" --threads 1; }
run() {
  local name="$1"; shift
  if [ -s "$work/logs/$name.json" ]; then return 0; fi
  "$@" > "$work/logs/.tmp-$name.json"
  mv "$work/logs/.tmp-$name.json" "$work/logs/$name.json"
}
