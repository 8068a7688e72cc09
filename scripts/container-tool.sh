# shellcheck shell=bash
# Sourced by scripts/images.sh and scripts/base-image.sh: `container_tool` prints the container tool to use.
# CONTAINER_TOOL (docker or podman) wins; else docker when its engine answers, else podman, else an error.
container_tool() {
  if [[ -n "${CONTAINER_TOOL:-}" ]]; then
    command -v "$CONTAINER_TOOL" >/dev/null || { echo "CONTAINER_TOOL=$CONTAINER_TOOL is not on PATH" >&2; return 1; }
    printf '%s' "$CONTAINER_TOOL"
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    printf docker
  elif command -v podman >/dev/null; then
    printf podman
  else
    echo "neither a running docker engine nor podman: install one (apt-get install podman runc)" >&2
    return 1
  fi
}

# Extra flags for `build` and `run` with that tool. podman's default limits on open files and processes are above the
# hard limits where the process may not raise it (no CAP_SYS_RESOURCE, as in some sandboxes and CI runners):
# ask for the hard limit instead. Builds use the host's network (no bridge or firewall rules are made for it).
container_flags() {
  if [[ "$1" == podman ]]; then
    local n p
    n="$(ulimit -Hn)"
    p="$(ulimit -Hu)"
    [[ "$n" == unlimited || "$n" -gt 1048576 ]] && n=1048576
    [[ "$p" == unlimited || "$p" -gt 32768 ]] && p=32768 # podman build's own default
    printf '%s\n' "--ulimit=nofile=$n:$n" "--ulimit=nproc=$p:$p" --network=host
  fi
}
