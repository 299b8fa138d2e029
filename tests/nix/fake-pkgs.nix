# Stand-in for the few parts of nixpkgs' `pkgs` that our modules use, for lib.evalModules on
# machines without nixpkgs. Named fakes, not builds:
# - writeShellScript writes the script text into the store with builtins.toFile, so tests can
#   follow a unit's ExecStart paths and read what would run;
# - formats.toml has nixpkgs' value type; `generate` keeps the value (tests/nix/json-to-toml
#   renders it, and `tb-agent check-config` validates the result);
# - the packages are placeholders with fixed store paths.
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
