# The NixOS VM tests' scripts and node names (nix/vm-tests.nix), evaluated with named fakes of
# pkgs and the flake's outputs, so that scripts/check-nix can check on a machine without
# nixpkgs or KVM that every script is valid Python and drives only nodes its test defines.
#
#   nix-instantiate --eval --strict --json tests/nix/vm-test-scripts.nix --argstr nixpkgsLib ../shared/nixpkgs-lib/lib
#
# Output: { "<check>" = { name; nodes = [ ... ]; testScript; }; }
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  system = "x86_64-linux";
  inherit (import ./fake-pkgs.nix { inherit lib; }) fakePackage;
  pkgs = {
    inherit lib;
    stdenv.hostPlatform = { inherit system; };
    testers.runNixOSTest = test: {
      inherit (test) name testScript;
      nodes = builtins.attrNames test.nodes;
    };
  };
  self = {
    packages.${system} = { tigerbeetle = fakePackage "tigerbeetle"; tbctl = fakePackage "tbctl"; };
    nixosModules.replica-host = { };
  };
in
import ../../nix/vm-tests.nix { inherit pkgs self; }
