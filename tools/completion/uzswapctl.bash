# bash completion for uzswapctl(8): commands, options, the settings of
# `uzswapctl set` and their values, instance names, and cgroup paths asked
# from the running daemon (`uzswapctl cgroups --json`; root or stats-group).
#
# Self-contained (no bash-completion helpers needed). Words come from the
# command line up to the cursor split at blanks, so that PATH=VALUE is one
# word whatever COMP_WORDBREAKS holds.

_uzswapctl_settings="compressor level max-pool-percent accept-threshold-percent writeback
  cgroup-writeback cgroup-max watermark-scale-factor idle-writeback-seconds log-level"

# _uzswapctl_ask ARGS...: runs the uzswapctl being completed with the
# instance options typed so far; never waits long on a stuck daemon.
_uzswapctl_ask() {
  timeout 2 "${_uzswapctl_words[0]}" "${_uzswapctl_instance[@]}" "$@" 2>/dev/null
}

_uzswapctl_cgroup_paths() {
  # cgroups --json is indented JSON, one "path" per object.
  _uzswapctl_ask cgroups --json | sed -n 's/^ *"path": "\(.*\)",\{0,1\}$/\1/p'
}

_uzswapctl_names() {
  local dir=${_uzswapctl_run_dir:-/run/uzswap} sock
  for sock in "$dir"/*/control; do
    [[ -S $sock ]] || continue
    sock=${sock%/control}
    echo "${sock##*/}"
  done
}

# _uzswapctl_reply WORDS CUR: COMPREPLY from WORDS matching CUR, relative to
# the part of CUR bash replaces (after its last word break, such as '=').
_uzswapctl_reply() {
  local words=$1 cur=$2 c
  mapfile -t COMPREPLY < <(compgen -W "$words" -- "$cur")
  local prefix=${cur%"${cur##*[$COMP_WORDBREAKS]}"}
  if [[ -n $prefix ]]; then
    for c in "${!COMPREPLY[@]}"; do COMPREPLY[c]=${COMPREPLY[c]#"$prefix"}; done
  fi
}

_uzswapctl() {
  COMPREPLY=()
  local line=${COMP_LINE:0:COMP_POINT}
  local -a words
  read -r -a words <<<"$line"
  [[ $line == *[[:space:]] || ${#words[@]} -eq 0 ]] && words+=("")
  local cur=${words[-1]} prev=""
  (( ${#words[@]} > 1 )) && prev=${words[-2]}
  _uzswapctl_words=("${words[@]}")
  _uzswapctl_instance=()
  _uzswapctl_run_dir=

  # The command, after the global options and their values.
  local i command="" command_at=0
  for ((i = 1; i < ${#words[@]} - 1; i++)); do
    case ${words[i]} in
      --name) _uzswapctl_instance+=(--name "${words[i + 1]}"); ((i++)) ;;
      --run-dir) _uzswapctl_instance+=(--run-dir "${words[i + 1]}"); _uzswapctl_run_dir=${words[i + 1]}; ((i++)) ;;
      --timeout) ((i++)) ;;
      -*) ;;
      *) command=${words[i]}; command_at=$i; break ;;
    esac
  done

  case $prev in
    --name) _uzswapctl_reply "$(_uzswapctl_names)" "$cur"; return ;;
    --run-dir) mapfile -t COMPREPLY < <(compgen -d -- "$cur"); return ;;
    --cgroup) _uzswapctl_reply "$(_uzswapctl_cgroup_paths)" "$cur"; return ;;
    --pages|--interval|--iterations|--timeout) return ;;
  esac

  if [[ -z $command ]]; then
    if [[ $cur == -* ]]; then
      _uzswapctl_reply "--help --version --name --run-dir --timeout" "$cur"
    else
      _uzswapctl_reply "status cgroups set writeback attribute restart stats top" "$cur"
    fi
    return
  fi

  case $command in
    status|cgroups) _uzswapctl_reply "--json --help" "$cur" ;;
    stats) _uzswapctl_reply "--prometheus --help" "$cur" ;;
    top) _uzswapctl_reply "--interval --iterations --help" "$cur" ;;
    attribute|restart) _uzswapctl_reply "--help" "$cur" ;;
    writeback) _uzswapctl_reply "--pages --cgroup --help" "$cur" ;;
    set)
      # set KEY VALUE: which positional is the cursor on?
      local -a positional=()
      for ((i = command_at + 1; i < ${#words[@]} - 1; i++)); do
        [[ ${words[i]} == -* ]] || positional+=("${words[i]}")
      done
      if [[ $cur == -* ]]; then
        _uzswapctl_reply "--help" "$cur"
      elif (( ${#positional[@]} == 0 )); then
        _uzswapctl_reply "$_uzswapctl_settings" "$cur"
      elif (( ${#positional[@]} == 1 )); then
        case ${positional[0]} in
          compressor) _uzswapctl_reply "lz4 zstd" "$cur" ;;
          writeback) _uzswapctl_reply "on off" "$cur" ;;
          log-level) _uzswapctl_reply "trace debug info warn error critical off" "$cur" ;;
          cgroup-writeback|cgroup-max)
            if [[ $cur == *=* ]]; then
              local path=${cur%%=*} values="on off"
              [[ ${positional[0]} == cgroup-max ]] && values="max"
              _uzswapctl_reply "$(printf '%s\n' $values | sed "s|^|$path=|")" "$cur"
            else
              _uzswapctl_reply "$(_uzswapctl_cgroup_paths | sed 's/$/=/')" "$cur"
              compopt -o nospace 2>/dev/null
            fi
            ;;
        esac
      fi
      ;;
  esac
}
complete -F _uzswapctl uzswapctl
