# One replica host as the NixOS modules make it, without nixpkgs: lib.evalModules of
# nixos-modules/replica-host.nix with nixpkgs' own modules, transcribed under nixpkgs/
# (assertions.nix, sysctl.nix, firewall.nix, firewall-nftables.nix; systemd.services typed and
# rendered by systemd-unit-options.nix and systemd-lib.nix), and stubs of the NixOS options whose
# modules cannot run here (stubs.nix), with the named fake packages (fake-pkgs.nix; store paths
# are placeholders, script texts are real). Shared by tests/nix/module-tests.nix and
# tests/ansible/nixos-units.nix, so both judge the same evaluation.
{ lib }:
let
  pkgs = import ./fake-pkgs.nix { inherit lib; };
  nixpkgsModules = [
    ./nixpkgs/nixos/modules/misc/assertions.nix
    ./nixpkgs/nixos/modules/config/sysctl.nix
    ./nixpkgs/nixos/modules/services/networking/firewall.nix
    ./nixpkgs/nixos/modules/services/networking/firewall-nftables.nix
  ];
in
{
  inherit pkgs;

  # The evaluated config of a host with replica-host enabled, plus `modules`.
  evalConfig = modules:
    (lib.evalModules {
      modules = nixpkgsModules ++ [
        ./stubs.nix
        { _module.args.pkgs = pkgs; }
        ../../nixos-modules/replica-host.nix
        {
          services.tigerbeetle-host.enable = true;
          services.tigerbeetle-replica.package = pkgs.tigerbeetle;
          services.tigerbeetle-replica.agentPackage = pkgs.tb-agent;
          services.tb-agent.package = pkgs.tb-agent;
        }
      ] ++ modules;
    }).config;

  # The messages of the assertions that do not hold.
  failedAssertions = config:
    map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);

  # A service's unit file as NixOS writes it: systemd-lib.nix's serviceToUnit (the text makeUnit
  # puts in the store), with this config's systemd settings.
  unitText = config: name:
    let
      systemdLib = import ./nixpkgs/nixos/lib/systemd-lib.nix {
        inherit config lib pkgs;
        utils = { };
      };
    in
    (systemdLib.serviceToUnit config.systemd.services.${name}).text;

  # The nftables ruleset as nftables.nix's rules script loads it (a stand-in for that module,
  # which cannot run here: see stubs.nix): each enabled table, deleted and redefined, then the
  # free-form ruleset.
  ruleset = config:
    let
      cfg = config.networking.nftables;
      enabledTables = lib.filterAttrs (_: table: table.enable) cfg.tables;
    in
    lib.concatStringsSep "\n"
      (lib.mapAttrsToList
        (_: table: ''
          table ${table.family} ${table.name}
          delete table ${table.family} ${table.name}
          table ${table.family} ${table.name} {
            ${table.content}
          }
        '')
        enabledTables) + "\n" + cfg.ruleset;
}
