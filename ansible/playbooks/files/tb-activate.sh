#!/bin/sh
# rollout.yml's activation of one plain systemd host, in its turn, as one root step (one task
# instead of eight remote ones: tasks/activate_systemd.yml). Puts in place each staged file
# (`<active><suffix>`, written by the staging play) whose content, mode or owner differs from its
# active path, then reloads systemd and restarts the agent if any of its files changed.
#
# Before anything moves, markers record what must restart: the replica (its unit changes while it
# runs; rollout.yml restarts it through its agent) and the agent. A run that stops anywhere after
# them leaves them, and the re-run, which finds nothing left to activate, still restarts what was
# owed. Once systemd has reloaded the units, the replica's marker names the process that still
# runs the former unit (its MainPID and start time): a process other than that one started from
# the new unit, so the marker is spent and the next activation removes it (rollout.yml need not
# come back to the host after the restart to remove it). A marker without that line (a run that
# stopped before the reload) still owes the restart. cp keeps mode and owner; the rename is atomic: a crash
# at any moment leaves each path with its old or its new content, never a part. The staged copies
# stay: a re-run stages the same content without a change.
#
# Usage: tb-activate.sh CHECK SUFFIX REPLICA_UNIT REPLICA_MARKER AGENT_UNIT AGENT_MARKER HOST
#          REPLICA_UNIT_FILE AGENT_FILE...
#   CHECK "True" (Ansible's check mode): print what would change, change nothing.
# Prints one line per outcome: "activated <path>", "agent restarted", "replica restart pending"
# (or, in check mode, "would activate <path>").
set -eu
# The path lists below are split on newlines only, and never globbed.
set -f
umask 077
[ "$#" -ge 8 ] || { echo "tb-activate.sh: expected at least 8 arguments, got $#" >&2; exit 2; }
check=$1 suffix=$2 replica_unit=$3 replica_marker=$4 agent_unit=$5 agent_marker=$6 host=$7
shift 7
replica_unit_file=$1
[ -n "$suffix" ] || { echo "tb-activate.sh: empty staging suffix" >&2; exit 2; }

# The replica's process, as "<MainPID> <start time, monotonic us>": "0 0" when none runs, empty
# when systemd did not say (then nothing is concluded from it: the marker stays).
replica_process() {
  pid=$(systemctl show --property=MainPID --value "$replica_unit") || return 0
  started=$(systemctl show --property=ExecMainStartTimestampMonotonic --value "$replica_unit") ||
    return 0
  case "$pid $started" in
    *[!0-9\ ]* | " "* | *" ") return 0 ;;
  esac
  echo "$pid $started"
}
# Whether the marker is spent (see above): it names a process, and another one runs now. None
# running, or systemd not saying: it is not, and the restart it owes (which starts the replica)
# is still owed.
marker_spent() {
  [ -f "$replica_marker" ] || return 1
  owed_by=$(sed -n 's/^process //p' "$replica_marker")
  running=$(replica_process)
  [ -n "$owed_by" ] && [ -n "$running" ] && [ "${running%% *}" != 0 ] && [ "$owed_by" != "$running" ]
}
replica_marker_spent=false
if marker_spent; then
  replica_marker_spent=true
  # Check mode reads it as gone, and changes nothing.
  if [ "$check" != "True" ]; then
    rm -f "$replica_marker"
  fi
fi

# Each active path whose staged copy exists and differs, one per line (paths come from the
# inventory's rules, tb_proto: no newline in them). No staged copy: nothing to activate.
differing=""
for active in "$@"; do
  staged=$active$suffix
  [ -e "$staged" ] || continue
  if [ -e "$active" ] && cmp -s "$staged" "$active" &&
    [ "$(stat -c '%a %u %g' "$staged")" = "$(stat -c '%a %u %g' "$active")" ]; then
    continue
  fi
  differing="$differing$active
"
done

if [ "$check" = "True" ]; then
  printf '%s' "$differing" | sed 's/^/would activate /'
  if [ -e "$replica_marker" ] && ! $replica_marker_spent; then
    echo "replica restart pending"
  fi
  exit 0
fi

replica_unit_changes=false
agent_files_change=false
old_ifs=$IFS
IFS='
'
for active in $differing; do
  if [ "$active" = "$replica_unit_file" ]; then
    replica_unit_changes=true
  else
    agent_files_change=true
  fi
done
IFS=$old_ifs

if $replica_unit_changes; then
  main_pid=$(systemctl show --property=MainPID --value "$replica_unit")
  if [ -n "$main_pid" ] && [ "$main_pid" != 0 ]; then
    echo "$host: the replica's unit changed while it ran" >"$replica_marker"
  fi
fi
if $agent_files_change; then
  echo "$host: the agent's files changed" >"$agent_marker"
fi

IFS='
'
for active in $differing; do
  cp --preserve=mode,ownership "$active$suffix" "$active.tb-activating"
  mv --force --no-target-directory "$active.tb-activating" "$active"
  echo "activated $active"
done
IFS=$old_ifs
# Also when a marker is left: an earlier run may have stopped after its renames and before this
# reload, and what is restarted below (or through the agent) must start from the new units.
if [ -n "$differing" ] || [ -e "$agent_marker" ] || [ -e "$replica_marker" ]; then
  systemctl daemon-reload
fi
# From here any new process of the replica starts from the new unit: the marker names the one
# that may not have. None running: the marker stays as it is, owing a restart (which starts it).
if [ -e "$replica_marker" ]; then
  running=$(replica_process)
  if [ -n "$running" ] && [ "${running%% *}" != 0 ]; then
    printf '%s: the replica'"'"'s unit changed while it ran\nprocess %s\n' "$host" "$running" \
      >"$replica_marker.tmp"
    mv -f "$replica_marker.tmp" "$replica_marker"
  fi
fi

# From this run or an earlier one that stopped before the restart. Restarting the agent never
# touches the replica (systemd mode). The unit is Type=notify: systemctl returns once the new
# agent has bound its listener, or fails (set -e), so rollout.yml asks it to restart the replica
# at once (and stops if it does not answer).
if [ -e "$agent_marker" ]; then
  systemctl restart "$agent_unit"
  rm -f "$agent_marker"
  echo "agent restarted"
fi
if [ -e "$replica_marker" ]; then
  echo "replica restart pending"
fi
