#!/bin/sh
# rollout.yml's staging play, first step on each plain systemd host (one task: tasks/
# stage_systemd.yml's decision needs all of it): the user the agent runs as, and whether the
# host still has what its applied record says the host prerequisites left (the tigerbeetle
# role's tasks/applied_digest.yml and applied_record.yml).
#
# Usage: tb-stage-probe.sh RECORD AGENT_UNIT REPLICA_UNIT
# Prints, one per line:
#   agent_user <user>           (empty when the unit has none)
#   record <digest>|none        the digest the record was written for
#   drift <what>                for each thing the record's host no longer has: a file whose
#                               SHA-256 differs or that is gone, the replica unit not enabled,
#                               the firewall's table not loaded
# Read only: changes nothing.
set -eu
[ "$#" -eq 3 ] || { echo "tb-stage-probe.sh: expected 3 arguments, got $#" >&2; exit 2; }
record=$1 agent_unit=$2 replica_unit=$3

echo "agent_user $(systemctl show --property=User --value "$agent_unit")"
if [ ! -f "$record" ]; then
  echo "record none"
  exit 0
fi
digest=$(sed -n '1s/^digest \([0-9a-f]\{64\}\)$/\1/p' "$record")
echo "record ${digest:-none}"
[ -n "$digest" ] || exit 0
# Each recorded file whose hash no longer matches, by sha256sum's own check. A line it cannot
# read (a record damaged or written by hand) is drift too: what it listed is unchecked.
if [ -n "$(sed 1d "$record")" ]; then
  checked=$(sed 1d "$record" | sha256sum --check --quiet --strict 2>/dev/null) && status=0 || status=$?
  failed=$(printf '%s\n' "$checked" | sed -n 's/^\(.*\): FAILED.*$/drift \1 differs or is gone/p')
  if [ -n "$failed" ]; then
    printf '%s\n' "$failed"
  elif [ "$status" != 0 ]; then
    echo "drift the record's file list is unreadable"
  fi
fi
if [ "$(systemctl is-enabled "$replica_unit" 2>/dev/null || true)" != enabled ]; then
  echo "drift $replica_unit not enabled"
fi
if grep -q ' /etc/tigerbeetle/firewall.nft$' "$record" && ! nft list table inet tigerbeetle >/dev/null 2>&1; then
  echo "drift the firewall's table inet tigerbeetle is not loaded"
fi
