# Stubs: the NixOS options our modules (and the nixpkgs modules transcribed under nixpkgs/) set or
# read whose nixpkgs modules cannot run here (they need the rest of nixpkgs), for evaluating them
# with lib.evalModules on machines without nixpkgs. Declarations only, typed as in nixpkgs
# (nixos/modules/...), so a definition of the wrong type fails here as it would on NixOS.
# nixpkgs' own code, transcribed, declares and renders the rest (eval-host.nix imports it):
# assertions, sysctl, the firewall, and the systemd units (systemd-unit-options.nix,
# systemd-lib.nix). The real modules are used by the VM tests (nix/vm-tests.nix) wherever nixpkgs
# exists.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # nixos/lib/utils.nix builds systemdUtils from these two files, with the NixOS config and pkgs.
  # Stub: utils (only mount units use it, through escapeSystemdPath; ours are services).
  utils.escapeSystemdPath = _: throw "stubs.nix: utils.escapeSystemdPath is a stub (no mount units here)";
  systemdUtils = {
    lib = import ./nixpkgs/nixos/lib/systemd-lib.nix { inherit config lib pkgs utils; };
    unitOptions = import ./nixpkgs/nixos/lib/systemd-unit-options.nix { inherit lib systemdUtils; };
  };
in
{
  options = {
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

    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };

    # nixos/modules/system/boot/systemd.nix declares systemd.services with the type
    # nixos/lib/systemd-types.nix builds from the transcribed files:
    #   services = attrsOf (submodule [ stage2ServiceOptions unitConfig stage2ServiceConfig ]);
    # and renders each with systemd-lib.nix's serviceToUnit (eval-host.nix's unitText).
    systemd.services = mkOption {
      default = { };
      type = types.attrsOf (types.submodule [
        systemdUtils.unitOptions.stage2ServiceOptions
        systemdUtils.lib.unitConfig
        systemdUtils.lib.stage2ServiceConfig
      ]);
    };
    # Stubs of systemd.nix's options that systemd-lib.nix reads.
    systemd.package = mkOption { type = types.package; default = pkgs.systemd; };
    systemd.globalEnvironment = mkOption { type = types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ])); default = { }; };
    systemd.enableStrictShellChecks = mkOption { type = types.bool; default = false; };

    # Stubs of nixos/modules/services/networking/nftables.nix (its options as at 048ef0d4; the
    # module itself needs lib.mdDoc, which current lib no longer has). eval-host.nix's ruleset
    # renders the tables as its rules script does.
    networking.nftables = {
      enable = mkOption { type = types.bool; default = false; };
      ruleset = mkOption { type = types.lines; default = ""; };
      rulesetFile = mkOption { type = types.nullOr types.path; default = null; };
      tables = mkOption {
        default = { };
        type = types.attrsOf (types.submodule ({ name, ... }: {
          options = {
            enable = mkOption { type = types.bool; default = true; };
            name = mkOption { type = types.str; default = name; };
            content = mkOption { type = types.lines; };
            family = mkOption { type = types.enum [ "ip" "ip6" "inet" "arp" "bridge" "netdev" ]; };
          };
        }));
      };
    };
    # Stubs of firewall-iptables.nix's options that firewall-nftables.nix reads, and of
    # firewalld.nix's enable, which firewall.nix's backend default reads.
    networking.firewall.extraCommands = mkOption { type = types.lines; default = ""; };
    networking.firewall.extraStopCommands = mkOption { type = types.lines; default = ""; };
    services.firewalld.enable = mkOption { type = types.bool; default = false; };

    # Stubs of the options the transcribed sysctl.nix and firewall.nix set or read:
    # nixos/modules/system/etc/etc.nix (text becomes source, as pkgs.writeText makes it),
    # system-path.nix, and the kernel modules (kernel.nix).
    environment.etc = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, config, ... }: {
        options = {
          text = mkOption { type = types.nullOr types.lines; default = null; };
          source = mkOption { type = types.path; };
          # "symlink" (a link into the store) or an octal mode: a copy with that mode.
          mode = mkOption { type = types.str; default = "symlink"; };
        };
        config.source = lib.mkIf (config.text != null) (lib.mkDefault (pkgs.writeText "etc-${baseNameOf name}" config.text));
      }));
    };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    boot.kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
    boot.extraModprobeConfig = mkOption { type = types.lines; default = ""; };
    boot.kernelPackages = mkOption { type = types.raw; default = { kernel = pkgs.linux; }; };

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

    # nixos/modules/tasks/network-interfaces.nix (nixpkgs 003a3fd2f05c, the nearest revision read:
    # the flake.lock's is not stored): networking.hostName, its type transcribed; its default is
    # config.system.nixos.distroId, "nixos" on NixOS. networking.domain from the same file.
    networking.hostName = mkOption {
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.domain = mkOption { type = types.nullOr types.str; default = null; };
  };
}
