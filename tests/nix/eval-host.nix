# One replica host as the NixOS modules make it, without nixpkgs: lib.evalModules of
# nixos-modules/replica-host.nix against the typed stubs of the NixOS options it sets
# (stubs.nix), with the named fake packages (fake-pkgs.nix; store paths are placeholders, script
# texts are real). Shared by tests/nix/module-tests.nix and tests/ansible/nixos-units.nix, so
# both judge the same evaluation.
{ lib }:
let
  pkgs = import ./fake-pkgs.nix { inherit lib; };
in
{
  inherit pkgs;

  # The evaluated config of a host with replica-host enabled, plus `modules`.
  evalConfig = modules:
    (lib.evalModules {
      modules = [
        ./stubs.nix
        { _module.args.pkgs = pkgs; }
        ../../nixos-modules/replica-host.nix
        {
          services.tigerbeetle-host.enable = true;
          services.tigerbeetle-replica.package = pkgs.tigerbeetle;
          services.tb-agent.package = pkgs.tb-agent;
        }
      ] ++ modules;
    }).config;

  # The messages of the assertions that do not hold.
  failedAssertions = config:
    map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
}
