# Transcribed verbatim from nixpkgs: nixos/modules/misc/assertions.nix (MIT licence, Copyright
# (c) 2003-2025 Eelco Dolstra and the Nixpkgs/NixOS contributors; see nixpkgs' COPYING).
# Revision read: 08062fccc11d1bf6e5e6a7bdc1e86eba3fb0c0bf. flake.lock pins 10e7ad5bbcb4
# (nixos-25.11), which could not be read here (no network; the stored copy of nixpkgs holds this
# file only at 08062fcc): this is the nearest readable revision. Only these header lines are
# ours. tests/nix/eval-host.nix evaluates nixos-modules/ with it.
{ config, lib, pkgs, ... }:

with lib;

{

  options = {

    assertions = mkOption {
      type = types.listOf types.unspecified;
      internal = true;
      default = [];
      example = [ { assertion = false; message = "you can't enable this for that reason"; } ];
      description = ''
        This option allows modules to express conditions that must
        hold for the evaluation of the system configuration to
        succeed, along with associated error messages for the user.
      '';
    };

    warnings = mkOption {
      internal = true;
      default = [];
      type = types.listOf types.str;
      example = [ "The `foo' service is deprecated and will go away soon!" ];
      description = ''
        This option allows modules to show warnings to users during
        the evaluation of the system configuration.
      '';
    };

  };
  # impl of assertions is in <nixos/modules/system/activation/top-level.nix>
}
