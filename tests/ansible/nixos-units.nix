# The replica and agent units, the agent's config and polkit rule that the NixOS modules
# (nixos-modules/) evaluate to for one host of an inventory, as JSON, for
# tests/ansible/compare-units and compare-agents (the Ansible roles must render the same), and
# with `--arg bootstrap true` everything tests/e2e/test_nixos_units.py installs on a real
# systemd host (the bootstrap unit, tmpfiles rules, firewall rules, the store scripts' texts).
# Evaluated as tests/nix/module-tests.nix evaluates hosts (tests/nix/eval-host.nix).
#
#   nix-instantiate --eval --strict --json tests/ansible/nixos-units.nix \
#     --argstr nixpkgsLib <nixpkgs>/lib --argstr inventoryFile $PWD/inventories/lab.json --argstr hostName tb-0
{ nixpkgsLib, inventoryFile, hostName, bootstrap ? false }:
let
  lib = import nixpkgsLib;
  b = builtins;
  inventory = import ../../nix/inventory.nix;
  inherit (import ../nix/eval-host.nix { inherit lib; }) pkgs evalConfig failedAssertions unitText;
  file = /. + inventoryFile;
  cluster = inventory.fromFile file;

  config = evalConfig [{
    services.tigerbeetle-host = { inventoryFile = file; inherit hostName; };
    services.tigerbeetle-replica.allowClusterIdZero = cluster.cluster_id == "0";
    services.tigerbeetle-replica.bootstrap = bootstrap;
  }];

  unitFields = unit: { inherit (unit) description documentation after before wants wantedBy startLimitIntervalSec startLimitBurst restartIfChanged serviceConfig; };
  replicaUnit = config.systemd.services.tigerbeetle-replica;
  ourUnits = lib.filterAttrs (name: _: b.elem name [ "tigerbeetle-replica" "tigerbeetle-replica-bootstrap" "tb-agent" ]) config.systemd.services;
  failed = failedAssertions config;
  etc = config.environment.etc;
in
assert failed == [ ] || throw "module assertions fail: ${lib.concatStringsSep "; " failed}";
{
  replica = unitFields replicaUnit // {
    packagePath = pkgs.tigerbeetle.outPath;
  };
  agent = unitFields config.systemd.services.tb-agent // {
    # The settings file (/etc/tb-agent/settings.toml), as JSON.
    inherit (config.services.tb-agent) settings;
    packagePath = pkgs.tb-agent.outPath;
    replicaPackagePath = pkgs.tigerbeetle.outPath;
    polkitRules = config.security.polkit.extraConfig;
  };
  host = {
    # What the agent and `tb-agent replica-start` are started with (--inventory is the host's
    # copy of this file, /etc/tigerbeetle/inventory.json; --host this name).
    name = hostName;
    inventoryPath = toString file;
    user = config.services.tigerbeetle-replica.user;
    # The unit files as NixOS writes them (nixpkgs' systemd-lib.nix, transcribed).
    unitFiles = lib.mapAttrs (name: _: unitText config name) ourUnits;
    # The placeholder packages in the units' PATH (systemd-lib.nix's default path: coreutils,
    # findutils, gnugrep, gnused, systemd), for the host's own tools to stand in for.
    pathPackages = map toString [ pkgs.coreutils pkgs.findutils pkgs.gnugrep pkgs.gnused pkgs.systemd ];
    # Store files the units name, with their texts (made here by builtins.toFile).
    storeScripts = map (path: { inherit path; text = b.readFile path; })
      (lib.optional bootstrap config.systemd.services.tigerbeetle-replica-bootstrap.serviceConfig.ExecStart);
    # The host's copy of the inventory (/etc/tigerbeetle/inventory.json), which the replica's
    # start and the agent read.
    inventory = { text = b.readFile etc."tigerbeetle/inventory.json".source; inherit (etc."tigerbeetle/inventory.json") mode; };
    tmpfilesRules = config.systemd.tmpfiles.rules;
    firewallInputRules = config.networking.firewall.extraInputRules;
    inherit (config.services.tigerbeetle-replica) dataFile;
    peerTokenFile = cluster.agent_peer_token_file;
    inherit (config.services.tb-agent) backupDir;
  };
}
