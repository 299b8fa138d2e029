# Evaluates nix/packages.nix with named fakes of the few nixpkgs functions it calls (there is no
# nixpkgs here), so scripts/check-nix can run the tigerbeetle derivation's real build phase with a
# recording stand-in for zig and compare the flags with what the tested binary reports:
#
#   nix-instantiate --eval --strict --json tests/nix/package-tests.nix --argstr nixpkgsLib ../shared/nixpkgs-lib/lib
#
# Output: { "<system>" = { tigerbeetle = { version; src; buildPhase; installPhase; }; }; }
{ nixpkgsLib }:
let
  lib = import nixpkgsLib;
  fakeStorePath = name: ((import ./fake-pkgs.nix { inherit lib; }).fakePackage name).outPath;
  forSystem = system:
    let
      built = import ../../nix/packages.nix {
        inherit lib;
        src = ../..;
        stdenv = {
          hostPlatform = { inherit system; };
          mkDerivation = attrs: attrs;
        };
        rustPlatform = {
          importCargoLock = _: fakeStorePath "cargo-vendor-dir";
          bindgenHook = fakeStorePath "bindgen-hook";
          buildRustPackage = attrs: attrs // { overrideAttrs = f: attrs // f attrs; };
        };
        zig_0_14 = fakeStorePath "zig-0.14.1";
      };
    in
    {
      tigerbeetle = { inherit (built.tigerbeetle) version src buildPhase installPhase; };
    };
in
lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] forSystem
