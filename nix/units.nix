# The replica and agent units' shared directives (start and restart policy, capabilities, limits,
# hardening): the file the Ansible roles ship too (ansible/roles/tigerbeetle/files/), read here so that each
# rule has one copy. nixos-modules/replica.nix and agent.nix merge these into serviceConfig.
let
  files = ../ansible/roles/tigerbeetle/files;
  units = builtins.fromJSON (builtins.readFile (files + "/units.json"));
  # [ { key; value; why?; } ... ] -> { key = value; }: serviceConfig renders a bool true/false
  # and a list one line per element, which systemd reads as the Debian unit's one line.
  directives = unit: builtins.listToAttrs (map (d: { name = d.key; value = d.value; }) units.${unit});
in
{
  # The replica's main process: Type, Restart= and the start guard's exit statuses.
  replica_service = directives "replica_service";
  # The replica's sandbox, shared with NixOS's bootstrap unit: capabilities, limits, hardening.
  replica = directives "replica";
  agent = directives "agent";
}
