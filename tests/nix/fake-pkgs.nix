# Stand-in for the few parts of nixpkgs' `pkgs` that our modules use, for lib.evalModules on
# machines without nixpkgs. Named fakes, not builds:
# - writeShellScript writes the script text into the store with builtins.toFile, so tests can
#   follow a unit's ExecStart paths and read what would run;
# - formats.toml has nixpkgs' value type; `generate` keeps the value (tests/nix/json-to-toml
#   renders it, and `tb-agent check-config` validates the result);
# - the packages are placeholders with fixed store paths;
# - for the nixpkgs modules transcribed under nixpkgs/: writeText writes its text into the store
#   with builtins.toFile (as nixpkgs' writeText would, without a build), runCommand records its
#   name, environment and script without running it (nothing here reads its output).
{ lib }:
let
  fakePackage = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
in
{
  # For the other evaluations under tests/ that need a placeholder package.
  inherit fakePackage;
  system = "x86_64-linux";
  tigerbeetle = fakePackage "tigerbeetle-0.16.78";
  tb-agent = fakePackage "tb-agent-0.1.0";
  systemd = fakePackage "systemd";
  coreutils = fakePackage "coreutils";
  findutils = fakePackage "findutils";
  gnugrep = fakePackage "gnugrep";
  gnused = fakePackage "gnused";
  nftables = fakePackage "nftables";
  iptables = fakePackage "iptables";
  nixos-firewall-tool = fakePackage "nixos-firewall-tool";
  linux = fakePackage "linux" // { configfile = fakePackage "linux-config"; version = "6.12"; };
  buildPackages.lndir = fakePackage "lndir";
  stdenv.hostPlatform = { is32bit = false; isLoongArch64 = false; };
  writeText = name: text: builtins.toFile name text;
  runCommand = name: env: script: fakePackage name // { recorded = { inherit env script; }; };
  writeShellScript = name: text: builtins.toFile name ''
    #!/bin/sh
    ${text}
  '';
  formats.toml = {}: {
    # pkgs/pkgs-lib/formats.nix
    type =
      let
        valueType = lib.types.oneOf [
          lib.types.bool
          lib.types.int
          lib.types.float
          lib.types.str
          lib.types.path
          (lib.types.attrsOf valueType)
          (lib.types.listOf valueType)
        ] // { description = "TOML value"; };
      in
      lib.types.attrsOf valueType;
    generate = name: value: fakePackage name // { inherit value; };
  };
}
