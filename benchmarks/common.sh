# Sourced by the benchmark scripts (from the repository root): the offline environment of this project's
# machines when it is there, and `shared_train_file REL`, which sets DATA=(--train_file FILE) for a file
# of the shared data sets ($GPT_SCRATCH_SHARED_DATA/REL) or leaves DATA empty (the script's default data).
if [ -f ../shared/offline/env.sh ]; then
  # shellcheck disable=SC1091
  . ../shared/offline/env.sh
fi
shared_train_file() {
  DATA=()
  if [ -n "${GPT_SCRATCH_SHARED_DATA:-}" ]; then
    DATA=(--train_file "$GPT_SCRATCH_SHARED_DATA/$1")
  fi
}
