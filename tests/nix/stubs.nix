# Stand-ins for the NixOS options our modules set, for evaluating them with lib.evalModules on
# machines without nixpkgs. Declarations only, typed as in nixpkgs (nixos/modules/...), so a
# definition of the wrong type fails here as it would on NixOS. The real modules are used by the
# VM tests (nix/checks.nix) wherever nixpkgs exists.
{ lib, ... }:
let
  inherit (lib) mkOption types;

  # nixos/lib/systemd-unit-options.nix: unitOption, an atom or a list of atoms.
  unitAtom = types.nullOr (types.oneOf [ types.bool types.int types.str types.package ]);
  unitOption = types.either unitAtom (types.listOf unitAtom);

  # nixos/modules/system/boot/systemd.nix: systemd.services.<name>.
  serviceOptions = { name, ... }: {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.str; default = ""; };
      documentation = mkOption { type = types.listOf types.str; default = [ ]; };
      wantedBy = mkOption { type = types.listOf types.str; default = [ ]; };
      requiredBy = mkOption { type = types.listOf types.str; default = [ ]; };
      wants = mkOption { type = types.listOf types.str; default = [ ]; };
      requires = mkOption { type = types.listOf types.str; default = [ ]; };
      after = mkOption { type = types.listOf types.str; default = [ ]; };
      before = mkOption { type = types.listOf types.str; default = [ ]; };
      partOf = mkOption { type = types.listOf types.str; default = [ ]; };
      path = mkOption { type = types.listOf (types.either types.package types.str); default = [ ]; };
      environment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      startLimitIntervalSec = mkOption { type = types.nullOr types.int; default = null; };
      startLimitBurst = mkOption { type = types.nullOr types.int; default = null; };
      unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      serviceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
      preStart = mkOption { type = types.lines; default = ""; };
      postStart = mkOption { type = types.lines; default = ""; };
    };
  };
in
{
  options = {
    # nixos/modules/misc/assertions.nix
    assertions = mkOption {
      type = types.listOf (types.submodule {
        options = {
          assertion = mkOption { type = types.bool; };
          message = mkOption { type = types.str; };
        };
      });
      default = [ ];
    };
    warnings = mkOption { type = types.listOf types.str; default = [ ]; };

    # nixos/modules/config/users-groups.nix (the options used here)
    users.users = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options = {
          isSystemUser = mkOption { type = types.bool; default = false; };
          isNormalUser = mkOption { type = types.bool; default = false; };
          group = mkOption { type = types.str; default = ""; };
          description = mkOption { type = types.passwdEntry types.str; default = ""; };
          extraGroups = mkOption { type = types.listOf types.str; default = [ ]; };
          home = mkOption { type = types.passwdEntry types.path; default = "/var/empty"; };
        };
      });
    };
    users.groups = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options.gid = mkOption { type = types.nullOr types.int; default = null; };
      });
    };

    systemd.services = mkOption { type = types.attrsOf (types.submodule serviceOptions); default = { }; };
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };

    # nixos/modules/services/networking/firewall.nix and nftables.nix
    networking.firewall = {
      enable = mkOption { type = types.bool; default = true; };
      allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      extraInputRules = mkOption { type = types.lines; default = ""; };
    };
    networking.nftables.enable = mkOption { type = types.bool; default = false; };

    # nixos/modules/config/sysctl.nix: sysctlOption
    boot.kernel.sysctl = mkOption {
      type = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.str types.int ]));
      default = { };
    };

    # nixos/modules/security/polkit.nix
    security.polkit.enable = mkOption { type = types.bool; default = false; };
    security.polkit.extraConfig = mkOption { type = types.lines; default = ""; };

    # Time sync: timesyncd is on by default in NixOS.
    services.timesyncd.enable = mkOption { type = types.bool; default = true; };
    services.chrony.enable = mkOption { type = types.bool; default = false; };
    services.ntp.enable = mkOption { type = types.bool; default = false; };

    # nixos/modules/config/swap.nix and zram.nix
    swapDevices = mkOption {
      default = [ ];
      type = types.listOf (types.submodule { options.device = mkOption { type = types.str; }; });
    };
    zramSwap.enable = mkOption { type = types.bool; default = false; };
  };
}
