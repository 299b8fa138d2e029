# The NixOS VM tests' scripts and node names (nix/vm-tests.nix), evaluated with named fakes of
# pkgs and the flake's outputs, so that scripts/check-nix can check on a machine without
# nixpkgs or KVM that every script is valid Python and drives only nodes its test defines.
#
#   nix-instantiate --eval --strict --json tests/nix/vm-test-scripts.nix --argstr nixpkgsLib ../shared/nixpkgs-lib/lib
#
# Output: { "<check>" = { name; nodes = [ ... ]; testScript; virtualisation = { <node> = { diskSize; memorySize; }; }; }; }
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  system = "x86_64-linux";
  inherit (import ./fake-pkgs.nix { inherit lib; }) fakePackage;
  pkgs = {
    inherit lib;
    stdenv.hostPlatform = { inherit system; };
    curl = fakePackage "curl";
    netcat = fakePackage "netcat";
    testers.runNixOSTest = test: {
      inherit (test) name testScript;
      nodes = builtins.attrNames test.nodes;
      virtualisation = lib.mapAttrs (_: virtualisation) test.nodes;
    };
  };
  # A node's disk and memory as the VM gets them: its own virtualisation definitions, merged by
  # nixpkgs' own option declarations (tests/nix/nixpkgs/, transcribed: types, defaults, and
  # qemu-vm.nix's refusal of diskSize = "auto"). Definitions from imported modules are not seen:
  # ours set none (scripts/check-nix checks that nixos-modules/ never names virtualisation).
  virtualisation = node:
    let
      defined = (if builtins.isFunction node then node { inherit pkgs lib; config = { }; } else node).virtualisation or { };
      evaluated = lib.evalModules {
        modules = [
          ./nixpkgs/nixos/modules/virtualisation/qemu-vm-excerpt.nix
          # Stub (not transcribed): nixos/modules/misc/assertions.nix's option.
          { options.assertions = lib.mkOption { type = lib.types.listOf lib.types.unspecified; default = [ ]; }; }
          # Stub: the other virtualisation options our nodes set (typed as in qemu-vm.nix).
          { options.virtualisation.cores = lib.mkOption { type = lib.types.ints.positive; default = 1; }; }
          { virtualisation = defined; }
        ];
        specialArgs = { };
      };
      config = evaluated.config;
      failed = map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
    in
    if failed != [ ] then throw (lib.concatStringsSep "; " failed)
    else { inherit (config.virtualisation) diskSize memorySize; };
  self = {
    packages.${system} = { tigerbeetle = fakePackage "tigerbeetle"; tbctl = fakePackage "tbctl"; };
    nixosModules.replica-host = { };
  };
in
import ../../nix/vm-tests.nix { inherit pkgs self; }
