# Evaluates nix/packages.nix with named stand-ins for the few nixpkgs functions it calls (there is
# no nixpkgs here), so scripts/check-nix can run the tigerbeetle derivation through stdenv's real
# setup.sh (tests/nix/nixpkgs/pkgs/stdenv/generic/setup.sh, genericBuild) in a store laid out by
# tests/nix/package-build, with a recording stand-in for zig:
#
#   nix-instantiate --eval --strict --json tests/nix/package-tests.nix \
#     --argstr nixpkgsLib ../shared/nixpkgs-lib/lib --argstr storeDir /tmp/x/store
#
# Output, per system: { env (the derivation's attributes as Nix passes them to the builder);
# src (what made the source: a fetchCrate request, or a path); vendorDir; zig }.
# Stand-ins, not transcriptions: stdenv.mkDerivation returns its attributes (the builder gets them
# as its environment, converted as Nix converts them, below); fetchCrate and importCargoLock return
# store paths that tests/nix/package-build fills as nixpkgs' fetchcrate.nix and
# import-cargo-lock.nix would.
{ nixpkgsLib, storeDir }:
let
  lib = import nixpkgsLib;
  # A store path: 32 base-32 characters, then the name (stdenv's stripHash removes the former).
  storePath = name: "${storeDir}/00000000000000000000000000000000-${name}";
  fakePackage = name: { type = "derivation"; inherit name; outPath = storePath name; };
  vendorDir = fakePackage "cargo-vendor-dir";
  zig = fakePackage "zig-0.14.1";
  # pkgs/build-support/rust/fetchcrate.nix: with unpack = false, a fetchurl of the .crate named
  # "<crate>-<version>.tar.gz"; the request is kept so package-build can check its hash.
  fetchCrate = args:
    let crateName = args.crateName or args.pname;
    in fakePackage "${crateName}-${args.version}.tar.gz" // { fetchCrateArgs = args; };
  # How Nix passes a derivation attribute to the builder (nix/src/libexpr/primops.cc, derivation).
  toEnv = value:
    if builtins.isBool value then (if value then "1" else "")
    else if value == null then ""
    else if builtins.isList value then lib.concatMapStringsSep " " toEnv value
    else if builtins.isAttrs value then value.outPath
    else toString value;
  forSystem = system:
    let
      packages = import ../../nix/packages.nix;
      # Only the arguments the function takes, as callPackage passes them.
      available = {
        inherit lib fetchCrate;
        src = ../..;
        stdenv = {
          hostPlatform = { inherit system; };
          mkDerivation = attrs: attrs;
        };
        rustPlatform = {
          importCargoLock = _: vendorDir;
          bindgenHook = fakePackage "bindgen-hook";
          buildRustPackage = attrs: attrs // { overrideAttrs = f: attrs // f attrs; };
        };
        zig_0_14 = zig;
        installShellFiles = fakePackage "install-shell-files";
      };
      built = packages (builtins.intersectAttrs (builtins.functionArgs packages) available);
      drv = built.tigerbeetle;
      # mkDerivation keeps meta and passthru out of the derivation; it adds name and system.
      attrs = removeAttrs drv [ "meta" "passthru" ] // {
        name = "${drv.pname}-${drv.version}";
        inherit system;
      };
    in
    {
      env = lib.mapAttrs (_: toEnv) attrs;
      src =
        if builtins.isAttrs drv.src && drv.src ? fetchCrateArgs
        then { kind = "fetchCrate"; path = drv.src.outPath; args = drv.src.fetchCrateArgs; }
        else { kind = "path"; path = toEnv drv.src; };
      vendorDir = vendorDir.outPath;
      zig = zig.outPath;
      out = storePath attrs.name;
    };
in
lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] forSystem
